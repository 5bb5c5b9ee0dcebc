"""What an analysis changes in the CRM: the contact (found by its normalized phone, as customers
are), its pipeline stage, and the `activities` entries recording the AI decision."""
from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from services.analyzer.contact_update import ContactPlan, already_written, plan_contact, write_contact
from services.analyzer.staging import CrmRules, audit, stage_change
from services.database import ACTIVITIES, CALLS, CONTACTS
from services.privacy.erasure import Eraser
from services.writers import bulk_upsert, records_by_phone
from utils.phone import Phone

PAST_CONVERSATIONS_KEPT = 20
_CONTACT_FIELDS = ("tag", "leadScore", "leadStatus", "sentiment")
ACTIVITY_TYPE = "ai_analysis"
# Read, decide, write: a lock set or the contact created by another process between the read and
# the write sends the decision round again; more than a few rounds means something is wrong.
MAX_DECISIONS = 5


class ContactContention(RuntimeError):
    """The contact changed under every attempt to write the analysis."""


def record_decision(db: Database, call: dict, analysis: dict, now: datetime, rules: CrmRules | None = None) -> bool:
    """Apply a finished analysis (a `calls.analysis` document with result fields) to the call's
    contact and log it as an activity. False when the call has no customer number.

    With `rules` and a pipeline for the call's agent, the analysis also places or moves the
    contact in the pipeline (models/stage_routing.py). Fields a person locked are not written;
    what the analysis would have written is kept under `suggested` (models/locks.py).

    One activity per AI decision, keyed by the call's `analysisRound`, written with the stage
    audit before the contact (from the contact as read, which the write then requires unchanged):
    a process that stops after the contact write leaves them in place, and its retake, finding
    the decision's receipt on the contact, writes nothing again; a re-analysis (`reanalyze` starts
    a new round) adds an activity."""
    if not call.get("customerPhone"):
        return False
    phone = Phone.stored(call["customerPhone"], bool(call.get("customerPhoneValid")))
    contacts = db[CONTACTS]
    call_at = call.get("callAt") or now
    contact_id = _write(db, phone, call, analysis, rules, call_at, now)
    _remember_conversation(contacts, contact_id, {
        "callId": call["callId"], "summary": analysis["summary"], "tag": analysis["tag"], "at": call_at,
    })
    if _erased_meanwhile(db, call["callId"]):
        # `main.py forget` stripped the call while it was analyzed, and its sweep may have run
        # before this decision landed. It marks the call before it removes contacts and
        # activities, so of its sweep and this one, one runs after this write.
        Eraser(db).sweep(phone)
        return False
    return True


def _write(db: Database, phone: Phone, call: dict, analysis: dict, rules: CrmRules | None,
           call_at: datetime, now: datetime) -> object:
    """Read the contact, decide (its stage too), log, write; again when it changed in between."""
    contacts = db[CONTACTS]
    for _ in range(MAX_DECISIONS):
        found = (records_by_phone(contacts, [phone]).get(phone.key) or [None])[0]
        if already_written(found, call):
            return found["_id"]
        staged = rules.decide(call, found, analysis) if rules is not None else None
        changes = _changes(analysis)
        if staged is not None and staged[1].changes_stage:
            changes.update(stage_change(*staged, call, now))
        plan = plan_contact(found, changes, call_at)
        # A contact created by this write gets its id now, so the activities can name it first.
        contact_id = found["_id"] if found is not None else ObjectId()
        bulk_upsert(db[ACTIVITIES], [
            _decision(call, analysis, contact_id, plan, now),
            *audit(db, contact_id=contact_id, call=call, analysis=analysis, staged=staged, held=plan.held,
                   applies=plan.applies, now=now)])
        written = write_contact(contacts, phone, plan, call, contact_id=contact_id, call_at=call_at, now=now)
        if written is not None:
            return written
    raise ContactContention(f"the contact of call {call['callId']} kept changing while it was written")


def _decision(call: dict, analysis: dict, contact_id: object, plan: ContactPlan, now: datetime) -> UpdateOne:
    key = {"callId": call["callId"], "type": ACTIVITY_TYPE, "round": call.get("analysisRound", 0)}
    return UpdateOne(key, {"$set": {
        "contactId": contact_id,
        "changes": plan.changes(),
        # False: the contact already follows a newer call; this decision is history only.
        "appliedToContact": plan.applies,
        "at": now,
        "summary": analysis["summary"],
        "reasoning": analysis["reasoning"],
        "confidence": analysis["confidence"],
        "model": analysis["model"],
        "usedFallback": analysis["usedFallback"],
        "analysisStatus": analysis["status"],
    }}, upsert=True)


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
