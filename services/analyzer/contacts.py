"""What an analysis changes in the CRM: the contact (found by its normalized phone, as customers
are) and an `activities` entry recording the AI decision."""
from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.database import ACTIVITIES, CONTACTS
from services.phone_lookup import ids_by_phone
from utils.phone import Phone

PAST_CONVERSATIONS_KEPT = 20
_CONTACT_FIELDS = ("tag", "leadScore", "leadStatus", "sentiment")
ACTIVITY_TYPE = "ai_analysis"


def record_decision(db: Database, call: dict, analysis: dict, now: datetime) -> bool:
    """Apply a finished analysis (a `calls.analysis` document with result fields) to the call's
    contact and log it as an activity. False when the call has no customer number.

    One activity per AI decision, keyed by the call's `analysisRound`: the retake of an attempt
    that died midway rewrites its round's activity (and one pastConversations entry per call),
    while a re-analysis (`reanalyze` starts a new round) adds an activity."""
    if not call.get("customerPhone"):
        return False
    phone = Phone.stored(call["customerPhone"], bool(call.get("customerPhoneValid")))
    changes = _changes(analysis)
    contacts = db[CONTACTS]
    contact_id, before = _update_contact(contacts, phone, {**changes, "lastAnalyzedAt": now,
                                                           "updatedAt": now}, now)
    _remember_conversation(contacts, contact_id, {
        "callId": call["callId"], "summary": analysis["summary"], "tag": analysis["tag"],
        "at": call.get("callAt") or now,
    })
    key = {"callId": call["callId"], "type": ACTIVITY_TYPE, "round": call.get("analysisRound", 0)}
    db[ACTIVITIES].update_one(key, {
        # A retake finds the contact as the first attempt already left it, so its own diff
        # would be empty: the first attempt's `changes` is the one that says what the decision did.
        "$setOnInsert": {"changes": {name: {"from": _value_at(before, name), "to": value}
                                     for name, value in changes.items()
                                     if _value_at(before, name) != value}},
        "$set": {
            "contactId": contact_id,
            "at": now,
            "summary": analysis["summary"],
            "reasoning": analysis["reasoning"],
            "confidence": analysis["confidence"],
            "model": analysis["model"],
            "usedFallback": analysis["usedFallback"],
            "analysisStatus": analysis["status"],
        },
    }, upsert=True)
    return True


def _changes(analysis: dict) -> dict:
    """The contact fields this analysis sets. Unknowns (a tag the configuration lacks, an extra
    field the call did not mention) leave what an earlier call found."""
    changes = {name: analysis[name] for name in _CONTACT_FIELDS if analysis[name] is not None}
    changes.update({f"extra.{name}": value for name, value in analysis["extra"].items()
                    if value is not None})
    return changes


def _update_contact(contacts: Collection, phone: Phone, fields: dict, now: datetime) -> tuple[object, dict]:
    """Update the contact stored under any spelling of the number, or create it under its key.
    Returns its _id and the document as it was before (empty when created)."""
    existing_id = ids_by_phone(contacts, [phone]).get(phone.key)
    update = {"$set": fields, "$setOnInsert": {"phoneValid": phone.valid, "createdAt": now}}
    if existing_id is not None:
        before = contacts.find_one_and_update({"_id": existing_id}, update,
                                              return_document=ReturnDocument.BEFORE)
        return existing_id, before or {}
    try:
        before = contacts.find_one_and_update({"phone": phone.key}, update, upsert=True,
                                              return_document=ReturnDocument.BEFORE)
    except DuplicateKeyError:
        # Another process created it since our lookup; now it exists, so this is an update.
        before = contacts.find_one_and_update({"phone": phone.key}, update,
                                              return_document=ReturnDocument.BEFORE)
    contact_id = before["_id"] if before else contacts.find_one({"phone": phone.key}, {"_id": 1})["_id"]
    return contact_id, before or {}


def _remember_conversation(contacts: Collection, contact_id: object, entry: dict) -> None:
    """One entry per call: a re-analysis replaces its entry; otherwise append, keeping the newest."""
    replaced = contacts.update_one({"_id": contact_id, "pastConversations.callId": entry["callId"]},
                                   {"$set": {"pastConversations.$": entry}})
    if replaced.matched_count:
        return
    contacts.update_one(
        {"_id": contact_id, "pastConversations.callId": {"$ne": entry["callId"]}},
        {"$push": {"pastConversations": {"$each": [entry], "$sort": {"at": 1},
                                         "$slice": -PAST_CONVERSATIONS_KEPT}}},
    )


def _value_at(document: dict, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document
