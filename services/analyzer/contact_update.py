"""One analysis written onto its contact: atomically, only while the contact does not follow a
newer call, and never over a field a person locked (models/locks.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from models.locks import split_locked, suggestions, unlocked_guard
from services.database import PHONE_INDEX_KEYS
from utils.phone import Phone



def value_at(document: dict, dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


@dataclass(frozen=True)
class ContactWrite:
    contact_id: object
    before: dict  # the contact as the write found it (empty when it created it)
    applied: bool  # False: the contact already follows a newer call; nothing but times written
    held: dict = field(default_factory=dict)  # field -> value a lock kept out


def write_contact(contacts: Collection, phone: Phone, found: dict | None, changes: dict, *, call_id: str,
                  call_at: datetime, now: datetime) -> ContactWrite | None:
    """Apply `changes` to `found` (the contact as read, or None to create it under the number's
    key). None when the contact changed meanwhile in a way that may change the decision (a lock
    set, the contact created by another process): read it again and decide again."""
    allowed, held = split_locked(changes, (found or {}).get("locked") or ())
    # A lock holds back only what would differ from what the person set.
    held = {name: value for name, value in held.items() if value_at(found or {}, name) != value}
    touched = {"lastAnalyzedAt": now, "updatedAt": now}
    update = {"$set": {**allowed, **suggestions(held, call_id, now), **touched, "analyzedCallAt": call_at},
              "$setOnInsert": {"phoneValid": phone.valid, "createdAt": now}}
    # Not newer than this call, or never analyzed (missing or null): one predicate, no `$or`.
    condition = {"analyzedCallAt": {"$not": {"$gt": call_at}}, **unlocked_guard(allowed)}
    if found is None:
        try:
            before = contacts.find_one_and_update({"phone": phone.key, **condition}, update, upsert=True,
                                                  hint=PHONE_INDEX_KEYS, return_document=ReturnDocument.BEFORE)
        except DuplicateKeyError:
            return None  # created by another process since the read (or locked): decide on it
        contact_id = before["_id"] if before else contacts.find_one({"phone": phone.key}, {"_id": 1})["_id"]
        return ContactWrite(contact_id, before or {}, True, held)
    before = contacts.find_one_and_update({"_id": found["_id"], **condition}, update,
                                          return_document=ReturnDocument.BEFORE)
    if before is not None:
        return ContactWrite(found["_id"], before, True, held)
    newer = contacts.find_one_and_update({"_id": found["_id"], "analyzedCallAt": {"$gt": call_at}},
                                         {"$set": touched}, return_document=ReturnDocument.BEFORE)
    if newer is not None:
        return ContactWrite(found["_id"], newer, False)
    return None  # a lock set (or the contact removed) since the read
