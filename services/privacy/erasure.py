"""Erasure of one number everywhere the daemon writes (`main.py forget`).

`forget` puts the number's keyed hash on the suppression list first, then sweeps: from the moment
the entry exists no writer stores the number, and a writer that was already writing it finds the
entry after its write and sweeps again (`PrivacyGuard.recheck`, `contacts.record_decision`), so
whichever of the two sweeps runs last leaves nothing behind.

What a sweep does, per collection:
- `customers`, `contacts`, `customer_calls`: the number's documents are deleted (any spelling).
- `activities`: its status changes, the AI decisions on its calls and on its contact are deleted.
- `calls` (the number as the customer's, or on either side: `fromNumber`, `toNumber`): kept for the business's totals (calls, minutes, cost, tags per agent), without a number,
  a transcript, a recording, extracted data or any text of the analysis; marked `erasedAt`. A call
  not analyzed yet is marked processed with a `skipped: erased` analysis, and a claim on it is
  dropped, so an analysis in progress cannot write its text back.
- `sync_state`: the number's calls are no longer followed by id.
- `webhook_inbox`: deliveries still waiting with the number on either side (their raw body holds
  it) are deleted; the numbers are read from the body as the sync reads them (`parse_execution`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from models.execution import MalformedExecution, parse_execution
from services import lease
from services.analyzer.schema import analysis_document
from services.customer_merge import linked_call_id
from services.database import (ACTIVITIES, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, ERASURES, INBOX_STATE_KEYS,
                               INBOX_WAITING, STAGE_REVIEWS, SYNC_STATE, WEBHOOK_INBOX)
from services.privacy.hashing import PhoneHasher
from services.privacy.suppressions import SuppressionList
from utils.clock import utcnow
from utils.phone import DEFAULT_REGION, Phone, lookup_keys

ERASED = "erased"  # `calls.analysis.skipped` of a call erased before it was analyzed
# Everything on a call that says who was called or what was said; the rest are the business's figures.
PERSONAL_CALL_FIELDS = (
    "fromNumberRaw", "fromNumber", "toNumberRaw", "toNumber", "customerPhone", "customerPhoneValid",
    "customerPhoneMissing", "transcript", "bolnaSummary", "extractedData", "extracted", "extractedConfidence",
    "recordingUrl")
ANALYSIS_TEXT_FIELDS = ("analysis.summary", "analysis.reasoning", "analysis.extra", "analysis.error")
COLLECTIONS = ("customers", "customerCalls", "calls", "contacts", "activities", "stageReviews", "followUps",
               "webhookInbox")
# Where a call stores a number: the customer's, and both sides as normalized.
CALL_NUMBER_FIELDS = ("customerPhone", "fromNumber", "toNumber")


@dataclass(frozen=True)
class PersonRecords:
    """What the database holds of one number, found under every spelling it may be stored with."""
    spellings: list[str]
    analyzed_calls: list[str]  # call ids; also those only a customer link names
    waiting_calls: list[str]   # call ids not analyzed yet
    contact_ids: list
    customers: int
    links: int
    activities: int
    reviews: int
    follow_ups: dict[str, list[str]]  # sync_state _id -> the number's calls followed there
    deliveries: list  # webhook_inbox _ids of waiting deliveries holding the number

    @property
    def call_ids(self) -> list[str]:
        return self.analyzed_calls + self.waiting_calls

    def counts(self) -> dict[str, int]:
        return {"customers": self.customers, "customerCalls": self.links, "calls": len(self.call_ids),
                "contacts": len(self.contact_ids), "activities": self.activities, "stageReviews": self.reviews,
                "followUps": sum(len(ids) for ids in self.follow_ups.values()), "webhookInbox": len(self.deliveries)}


class Eraser:
    """`region`: where numbers written without a country code are from (DEFAULT_PHONE_REGION), to
    read a waiting delivery's numbers as the sync would."""

    def __init__(self, db: Database, region: str = DEFAULT_REGION):
        self.db = db
        self.region = region

    def find(self, phone: Phone) -> PersonRecords:
        spellings = lookup_keys(phone)
        db = self.db
        # One query per field, each served by its index (an `$or` is not, on every planner).
        calls = list({call["callId"]: call for field in CALL_NUMBER_FIELDS for call in db[CALLS].find(
            {field: {"$in": spellings}}, {"callId": 1, "processed": 1, "_id": 0})}.values())
        linked = {linked_call_id(link) for link in db[CUSTOMER_CALLS].find({"phone": {"$in": spellings}},
                                                                            {"_id": 1, "callId": 1})}
        waiting = sorted(call["callId"] for call in calls if call.get("processed") is False)
        analyzed = sorted(({call["callId"] for call in calls} | linked) - set(waiting))
        contact_ids = [doc["_id"] for doc in db[CONTACTS].find({"phone": {"$in": spellings}}, {"_id": 1})]
        activities = set()
        for selector in _activity_selectors(spellings, analyzed + waiting, contact_ids):
            activities |= {doc["_id"] for doc in db[ACTIVITIES].find(selector, {"_id": 1})}
        follow_ups = {}
        if analyzed or waiting:
            ids = set(analyzed + waiting)
            for state in db[SYNC_STATE].find({"pending.callId": {"$in": sorted(ids)}}, {"pending.callId": 1}):
                follow_ups[state["_id"]] = [p["callId"] for p in state["pending"] if p["callId"] in ids]
        return PersonRecords(spellings, analyzed, waiting, contact_ids,
                             customers=len(list(db[CUSTOMERS].find({"phone": {"$in": spellings}}, {"_id": 1}))),
                             links=len(linked), activities=len(activities),
                             reviews=db[STAGE_REVIEWS].count_documents({"customerPhone": {"$in": spellings}}),
                             follow_ups=follow_ups, deliveries=self._deliveries(set(spellings)))

    def _deliveries(self, spellings: set[str]) -> list:
        """The waiting deliveries with the number on either side (only those keep their body)."""
        waiting = self.db[WEBHOOK_INBOX].find({"state": INBOX_WAITING}, {"body": 1}, hint=INBOX_STATE_KEYS)
        return [entry["_id"] for entry in waiting
                if entry.get("body") and _delivered_numbers(bytes(entry["body"]), self.region) & spellings]

    def sweep(self, phone: Phone) -> dict[str, int]:
        """Remove what the database holds of the number now; what was removed, per collection."""
        found = self.find(phone)
        now = utcnow()
        db = self.db
        removed = Counter({"calls": self._strip_calls(found, now)})
        removed["customerCalls"] = db[CUSTOMER_CALLS].delete_many({"phone": {"$in": found.spellings}}).deleted_count
        for selector in _activity_selectors(found.spellings, found.call_ids, found.contact_ids):
            removed["activities"] += db[ACTIVITIES].delete_many(selector).deleted_count
        removed["stageReviews"] = db[STAGE_REVIEWS].delete_many({"customerPhone": {"$in": found.spellings}}).deleted_count
        removed["contacts"] = db[CONTACTS].delete_many({"phone": {"$in": found.spellings}}).deleted_count
        removed["customers"] = db[CUSTOMERS].delete_many({"phone": {"$in": found.spellings}}).deleted_count
        for state_id, call_ids in found.follow_ups.items():
            # A sync running now may save its own copy of the list back: harmless, its writers skip the number.
            db[SYNC_STATE].update_one({"_id": state_id}, {"$pull": {"pending": {"callId": {"$in": call_ids}}}})
            removed["followUps"] += len(call_ids)
        if found.deliveries:
            removed["webhookInbox"] = db[WEBHOOK_INBOX].delete_many({"_id": {"$in": found.deliveries}}).deleted_count
        return {name: removed[name] for name in COLLECTIONS}

    def _strip_calls(self, found: PersonRecords, now: datetime) -> int:
        calls = self.db[CALLS]
        stamp = {"erasedAt": now, "transcriptRemovedAt": now, "updatedAt": now}
        # A lease dropped too: the attempt holding a waiting call writes nothing of it back.
        unset = {**{name: "" for name in PERSONAL_CALL_FIELDS}, **lease.RELEASED}
        stripped = 0
        if found.analyzed_calls:
            stripped += calls.update_many({"callId": {"$in": found.analyzed_calls}}, {
                "$unset": {**unset, **{name: "" for name in ANALYSIS_TEXT_FIELDS}}, "$set": stamp}).modified_count
        if found.waiting_calls:
            skipped = analysis_document("skipped", attempted_at=now, skipped=ERASED)
            stripped += calls.update_many({"callId": {"$in": found.waiting_calls}}, {
                "$unset": unset, "$set": {**stamp, "processed": True, "analysis": skipped}}).modified_count
        return stripped


def _delivered_numbers(body: bytes, region: str) -> set[str]:
    """Both numbers of a delivery's body, as the sync stores them (their keys, and as received);
    for a body the sync could not read, every string in it, which holds the number if anything does."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # the listener stores only JSON
        return set()
    try:
        execution = parse_execution(payload, region)
    except (MalformedExecution, RecursionError):
        return set(_strings(payload))
    phones = (execution.from_phone, execution.to_phone)
    return {text for phone in phones if phone is not None for text in (phone.key, phone.raw)}


def _strings(value, depth: int = 0) -> list[str]:
    if isinstance(value, str):
        return [value]
    if depth > 20:
        return []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [text for item in items for text in _strings(item, depth + 1)]


def _activity_selectors(spellings: list[str], call_ids: list[str], contact_ids: list) -> list[dict]:
    """Each served by its own index: status changes by number, decisions by call and by contact."""
    selectors = [{"customerPhone": {"$in": spellings}}]
    if call_ids:
        selectors.append({"callId": {"$in": call_ids}})
    if contact_ids:
        selectors.append({"contactId": {"$in": contact_ids}})
    return selectors


def forget(db: Database, phone: Phone, hasher: PhoneHasher, region: str = DEFAULT_REGION) -> dict[str, int]:
    """Erase the number everywhere and keep it out of later syncs; what was removed. Idempotent:
    a second call finds nothing and changes nothing. `region`: as for `Eraser`."""
    suppressions = SuppressionList(db, hasher)
    suppressions.check_key()
    digest = hasher.digest(phone.key)
    suppressions.add(digest)  # before anything is removed: see the module's docstring
    removed = Eraser(db, region).sweep(phone)
    _record_erasure(db, digest, hasher.key_id, removed)
    return removed


def _record_erasure(db: Database, digest: str, key_id: str, removed: dict[str, int]) -> None:
    """One record per number (its hash), kept as evidence: when it was asked, when data was last
    removed and how much. A sweep that found nothing leaves an existing record as it was."""
    now = utcnow()
    update: dict = {"$setOnInsert": {"keyId": key_id, "requestedAt": now}}
    if any(removed.values()):
        update["$set"] = {"erasedAt": now}
        update["$inc"] = {f"removed.{name}": count for name, count in removed.items() if count}
    try:
        db[ERASURES].update_one({"_id": db[ERASURES].local_id(digest)}, update, upsert=True)
    except DuplicateKeyError:  # another forget of the number inserted it first: now it is an update
        db[ERASURES].update_one({"_id": db[ERASURES].local_id(digest)}, update)
