"""One analysis written onto its contact: atomically, only while the contact is as the decision
found it (its `analysisRevision`), does not follow a newer call, and has no field a person locked
since (models/locks.py); with a receipt of the decision (`decided`: call and round), by which a
retake knows the write was made."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from models.locks import split_locked, suggestions, unlocked_guard
from services.database import PHONE_INDEX_KEYS
from utils.phone import Phone

REVISION = "analysisRevision"  # counts the analyses written: a decision is made on one revision
DECIDED = "decided"  # receipts of the latest decisions written: {callId, round}
DECISIONS_KEPT = 100


def value_at(document: dict, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


@dataclass(frozen=True)
class ContactPlan:
    """What a decision does to the contact as read (`found`, None: not created yet)."""
    found: dict | None
    allowed: dict  # field -> value written
    held: dict = field(default_factory=dict)  # field -> value a lock keeps out
    applies: bool = True  # False: the contact already follows a newer call; the decision is history

    def changes(self) -> dict:
        """Each field the write changes: {"from", "to"}."""
        if not self.applies:
            return {}
        return {name: {"from": value_at(self.found or {}, name), "to": value}
                for name, value in self.allowed.items() if value_at(self.found or {}, name) != value}


def receipt(call: dict) -> dict:
    return {"callId": call["callId"], "round": call.get("analysisRound", 0)}


def already_written(found: dict | None, call: dict) -> bool:
    """Whether this call's decision of this round was written on the contact (by an attempt that
    stopped before it was seen through)."""
    return found is not None and receipt(call) in (found.get(DECIDED) or ())


def plan_contact(found: dict | None, changes: dict, call_at: datetime) -> ContactPlan:
    if found is not None and _newer(found.get("analyzedCallAt"), call_at):
        return ContactPlan(found, {}, applies=False)
    allowed, held = split_locked(changes, (found or {}).get("locked") or ())
    # A lock holds back only what would differ from what the person set.
    held = {name: value for name, value in held.items() if value_at(found or {}, name) != value}
    return ContactPlan(found, allowed, held)


def write_contact(contacts: Collection, phone: Phone, plan: ContactPlan, call: dict, *, contact_id: object,
                  call_at: datetime, now: datetime) -> object | None:
    """Write `plan`; the contact's id (`contact_id` for one it creates). None when the contact changed since it was read (another
    analysis written, a lock set, the contact created by another process): read it again and
    decide again."""
    touched = {"lastAnalyzedAt": now, "updatedAt": now}
    found = plan.found
    if not plan.applies:
        # History only; no revision: nothing this decision was made on changes.
        contacts.update_one({"_id": found["_id"]}, {"$set": touched})
        return found["_id"]
    update = {"$set": {**plan.allowed, **suggestions(plan.held, call["callId"], now), **touched,
                       "analyzedCallAt": call_at},
              "$inc": {REVISION: 1},
              "$push": {DECIDED: {"$each": [receipt(call)], "$slice": -DECISIONS_KEPT}},
              "$setOnInsert": {"phoneValid": phone.valid, "createdAt": now}}
    if found is None:
        update["$setOnInsert"]["_id"] = contact_id
    # The contact exactly as the decision read it: what it says changed is what changes.
    revision = (found or {}).get(REVISION)
    # `$exists`, not `None`: an upsert would copy an equality into the new contact, and $inc it.
    condition = {REVISION: revision if revision is not None else {"$exists": False}, **unlocked_guard(plan.allowed)}
    if found is None:
        try:
            written = contacts.find_one_and_update({"phone": phone.key, **condition}, update, upsert=True,
                                                   projection={"_id": 1}, hint=PHONE_INDEX_KEYS,
                                                   return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return None  # created by another process since the read (or locked): decide on it
        # Not ours when another process created the contact under this key since the read.
        return written["_id"] if written["_id"] == contact_id else None
    written = contacts.update_one({"_id": found["_id"], **condition}, update)
    return found["_id"] if written.matched_count else None


def _newer(analyzed_at: object, call_at: datetime) -> bool:
    return isinstance(analyzed_at, datetime) and analyzed_at > call_at
