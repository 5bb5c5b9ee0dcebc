"""What an analysis changes in the CRM: the contact (found by its normalized phone, as customers
are) and an `activities` entry recording the AI decision."""
from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.database import ACTIVITIES, CALLS, CONTACTS
from services.phone_lookup import ids_by_phone
from services.privacy.erasure import Eraser
from utils.phone import Phone

PAST_CONVERSATIONS_KEPT = 20
_CONTACT_FIELDS = ("tag", "leadScore", "leadStatus", "sentiment")
ACTIVITY_TYPE = "ai_analysis"
# The conditional updates below name their index: a planner that gives up on an index when the
# filter has a field outside it (the test run's wire server) would otherwise scan for one contact.
_BY_ID = [("_id", ASCENDING)]
_BY_PHONE = [("phone", ASCENDING)]


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
    call_at = call.get("callAt") or now
    contact_id, before, applied = _update_contact(contacts, phone, changes, call_at, now)
    _remember_conversation(contacts, contact_id, {
        "callId": call["callId"], "summary": analysis["summary"], "tag": analysis["tag"], "at": call_at,
    })
    key = {"callId": call["callId"], "type": ACTIVITY_TYPE, "round": call.get("analysisRound", 0)}
    db[ACTIVITIES].update_one(key, {
        # A retake finds the contact as the first attempt already left it, so its own diff
        # would be empty: the first attempt's `changes` is the one that says what the decision did.
        "$setOnInsert": {"changes": {name: {"from": _value_at(before, name), "to": value}
                                     for name, value in changes.items()
                                     if applied and _value_at(before, name) != value}},
        "$set": {
            "contactId": contact_id,
            # False: the contact already follows a newer call; this decision is history only.
            "appliedToContact": applied,
            "at": now,
            "summary": analysis["summary"],
            "reasoning": analysis["reasoning"],
            "confidence": analysis["confidence"],
            "model": analysis["model"],
            "usedFallback": analysis["usedFallback"],
            "analysisStatus": analysis["status"],
        },
    }, upsert=True)
    if _erased_meanwhile(db, call["callId"]):
        # `main.py forget` stripped the call while it was analyzed, and its sweep may have run
        # before this decision landed. It marks the call before it removes contacts and
        # activities, so of its sweep and this one, one runs after this write.
        Eraser(db).sweep(phone)
        return False
    return True


def _erased_meanwhile(db: Database, call_id: str) -> bool:
    stored = db[CALLS].find_one({"callId": call_id}, {"erasedAt": 1, "_id": 0})
    return stored is not None and stored.get("erasedAt") is not None


def _changes(analysis: dict) -> dict:
    """The contact fields this analysis sets. Unknowns (a tag the configuration lacks, an extra
    field the call did not mention) leave what an earlier call found."""
    changes = {name: analysis[name] for name in _CONTACT_FIELDS if analysis[name] is not None}
    changes.update({f"extra.{name}": value for name, value in analysis["extra"].items()
                    if value is not None})
    return changes


def _update_contact(contacts: Collection, phone: Phone, changes: dict, call_at: datetime,
                    now: datetime) -> tuple[object, dict, bool]:
    """Apply `changes` to the contact stored under any spelling of the number (or create it under
    its key) unless it already follows a newer call's analysis: tag, score and status follow the
    newest analyzed call, whatever order analyses finish in. Returns its _id, the document as it
    was before (empty when created) and whether the changes were applied."""
    touched = {"lastAnalyzedAt": now, "updatedAt": now}
    update = {"$set": {**changes, **touched, "analyzedCallAt": call_at},
              "$setOnInsert": {"phoneValid": phone.valid, "createdAt": now}}
    # Not newer than this call, or never analyzed (missing or null): one predicate, no `$or`.
    newer_or_none = {"analyzedCallAt": {"$not": {"$gt": call_at}}}
    existing_id = ids_by_phone(contacts, [phone]).get(phone.key)
    if existing_id is None:
        try:
            before = contacts.find_one_and_update({"phone": phone.key, **newer_or_none}, update, upsert=True,
                                                  hint=_BY_PHONE, return_document=ReturnDocument.BEFORE)
            contact_id = before["_id"] if before else contacts.find_one({"phone": phone.key}, {"_id": 1})["_id"]
            return contact_id, before or {}, True
        except DuplicateKeyError:
            # Another process created it since our lookup, with a newer call's analysis.
            existing_id = contacts.find_one({"phone": phone.key}, {"_id": 1})["_id"]
    before = contacts.find_one_and_update({"_id": existing_id, **newer_or_none}, update, hint=_BY_ID,
                                          return_document=ReturnDocument.BEFORE)
    if before is not None:
        return existing_id, before, True
    before = contacts.find_one_and_update({"_id": existing_id}, {"$set": touched},
                                          return_document=ReturnDocument.BEFORE)
    return existing_id, before or {}, False


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
