"""Personal data kept only as long as needed: retention of old transcripts and calls, erasure of
one number everywhere (`main.py forget`), and the suppression list that keeps an erased number out
of later syncs (by its keyed hash). What each step removes, and why it is safe while the daemon
runs (suppress first, sweep after; write first, check after): docs/privacy.md.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from models.call import TRANSCRIPT_FIELDS
from models.execution import Execution, MalformedExecution, linked_call_id, parse_execution
from services import lease
from services.analyzer.schema import analysis_document
from services.database import (ACTIVITIES, CALL_AGE_INDEX_KEYS, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, ERASURES,
                               FROM_NUMBER_INDEX_KEYS, INBOX_STATE_KEYS, INBOX_WAITING, STAGE_REVIEWS,
                               SUPPRESSION_KEY_KEYS, SUPPRESSIONS, SYNC_STATE, TO_NUMBER_INDEX_KEYS,
                               TRANSCRIPT_AGE_INDEX_KEYS, WEBHOOK_INBOX)
from services.run_records import RunRecorder, describe_failure
from utils.clock import utcnow
from utils.config import ConfigError
from utils.phone import DEFAULT_REGION, Phone, lookup_keys, mask_phone

log = logging.getLogger(__name__)

# Hashed with the key to tell, at start-up, whether the configured key is the one the suppression
# list was written with: a changed key would make every stored hash miss, silently.
_KEY_CHECK = b"callsync privacy key check"


class PrivacyKeyError(ConfigError):
    """PRIVACY_HASH_KEY is missing, or not the key the suppression list was written with."""


class AgentLineError(ValueError):
    """`forget` of a number the database knows only as an agent's own line: not a person's data,
    and on every call of the agent; nothing is erased."""


class PhoneHasher:
    def __init__(self, key: str):
        self._key = key.encode()
        self.key_id = hmac.new(self._key, _KEY_CHECK, hashlib.sha256).hexdigest()[:16]

    def digest(self, phone_key: str) -> str:
        """The hash of a number's stored key (E.164, or the text of an invalid number)."""
        return hmac.new(self._key, phone_key.encode(), hashlib.sha256).hexdigest()


def hasher_for(key: str | None, *, required: bool = False) -> PhoneHasher | None:
    if not key and required:
        raise PrivacyKeyError("PRIVACY_HASH_KEY is not set: erasure records and the suppression list hold "
                              "a keyed hash of the number, never the number. Set it to a random secret "
                              "(e.g. `openssl rand -hex 32`) and keep it: see docs/privacy.md.")
    return PhoneHasher(key) if key else None


class SuppressionList:
    def __init__(self, db: Database, hasher: PhoneHasher | None):
        self.entries = db[SUPPRESSIONS]
        self.hasher = hasher

    def add(self, digest: str) -> None:
        """Idempotent: an entry already there (a second `forget`, or two at once) is left as it was."""
        _upsert(self.entries, digest, {"$setOnInsert": {"keyId": self.hasher.key_id, "createdAt": utcnow()}})

    def suppressed(self, phone_keys: Iterable[str]) -> set[str]:
        """Which of these numbers (stored keys) are erased. Without a key nothing can be compared:
        that is an error once the list holds anything, not a reason to import the person again."""
        keys = set(phone_keys)
        if not keys:
            return set()
        if self.hasher is None:
            self.check_key()
            return set()
        by_id = {self.entries.local_id(self.hasher.digest(key)): key for key in keys}
        return {by_id[entry["_id"]] for entry in self.entries.find({"_id": {"$in": list(by_id)}}, {"_id": 1})}

    def check_key(self) -> None:
        """At start-up and whenever a key is needed: the list is usable with this configuration."""
        # Any entry, without a key; with one, an entry of another key. `keyId`, named: a simpler
        # planner (the test run's wire server) scans for a `$ne`.
        unusable = {} if self.hasher is None else {"keyId": {"$ne": self.hasher.key_id}}
        if self.entries.find_one(unusable, {"_id": 1}, hint=SUPPRESSION_KEY_KEYS) is None:
            return
        if self.hasher is None:
            raise PrivacyKeyError("PRIVACY_HASH_KEY is not set, but the suppression list holds erased "
                                  "numbers: without the key they cannot be recognized, and a sync would "
                                  "import them again. Set the key they were hashed with (docs/privacy.md).")
        raise PrivacyKeyError("PRIVACY_HASH_KEY is not the key the suppression list was written with: "
                              "erased numbers would not be recognized. Restore the earlier key "
                              "(docs/privacy.md).")


# Everything on a call that says who was called or what was said; the rest are the business's figures.
PERSONAL_CALL_FIELDS = (
    "fromNumberRaw", "fromNumber", "toNumberRaw", "toNumber", "customerPhone", "customerPhoneValid",
    "customerPhoneMissing", "transcript", "bolnaSummary", "extractedData", "extracted", "extractedConfidence",
    "recordingUrl")
ANALYSIS_TEXT_FIELDS = ("analysis.summary", "analysis.reasoning", "analysis.extra", "analysis.error")
COLLECTIONS = ("customers", "customerCalls", "calls", "contacts", "activities", "stageReviews", "followUps",
               "webhookInbox")
# The call types that say which side of a call is the agent's own line (the business's number):
# the caller of an outbound call, the number called on an inbound one. A call without one is taken
# as outbound (models/execution.py), but its caller may as well be a person who called in.
DIRECTIONS = ("inbound", "outbound")


@dataclass(frozen=True)
class PersonRecords:
    """What the database holds of one number, found under every spelling it may be stored with."""
    spellings: list[str]
    analyzed_calls: list[str]  # call ids; also those only a customer link names
    waiting_calls: list[str]   # call ids not analyzed yet
    contact_ids: list
    whole: dict[str, int]  # the documents removed whole (`_removed_whole`), by the name erasure reports
    follow_ups: dict[str, list[str]]  # sync_state _id -> the number's calls followed there
    deliveries: list  # webhook_inbox _ids of waiting deliveries holding the number
    agent_line: bool  # a stored call has the number on its agent's side

    @property
    def call_ids(self) -> list[str]:
        return self.analyzed_calls + self.waiting_calls

    def counts(self) -> dict[str, int]:
        return {**self.whole, "calls": len(self.call_ids),
                "followUps": sum(len(ids) for ids in self.follow_ups.values()), "webhookInbox": len(self.deliveries)}


class Eraser:
    """`region`: where numbers written without a country code are from (DEFAULT_PHONE_REGION), to
    read a waiting delivery's numbers as the sync would."""

    def __init__(self, db: Database, region: str = DEFAULT_REGION):
        self.db = db
        self.region = region

    def find(self, phone: Phone) -> PersonRecords:
        """A call is the number's where it is the customer, or the caller of a call without a
        direction unless the number is known as an agent's own line: never on the agent's side."""
        spellings = lookup_keys(phone)
        db = self.db
        agent_line = self.agent_line(spellings)
        selectors = [({"customerPhone": {"$in": spellings}}, None)]
        if not agent_line:
            selectors.append(({"fromNumber": {"$in": spellings}, "direction": {"$nin": list(DIRECTIONS)}},
                              FROM_NUMBER_INDEX_KEYS))
        # One query per field, each served by its index (an `$or` is not, on every planner).
        calls = list({call["callId"]: call for selector, index in selectors for call in db[CALLS].find(
            selector, {"callId": 1, "processed": 1, "_id": 0}, hint=index)}.values())
        linked = {linked_call_id(link) for link in db[CUSTOMER_CALLS].find({"phone": {"$in": spellings}},
                                                                            {"_id": 1, "callId": 1})}
        waiting = sorted(call["callId"] for call in calls if call.get("processed") is False)
        analyzed = sorted(({call["callId"] for call in calls} | linked) - set(waiting))
        contact_ids = [doc["_id"] for doc in db[CONTACTS].find({"phone": {"$in": spellings}}, {"_id": 1})]
        whole = {name: len({doc["_id"] for selector in selectors for doc in db[collection].find(selector, {"_id": 1})})
                 for name, collection, selectors in _removed_whole(spellings, analyzed + waiting, contact_ids)}
        follow_ups = {}
        if analyzed or waiting:
            ids = set(analyzed + waiting)
            for state in db[SYNC_STATE].find({"pending.callId": {"$in": sorted(ids)}}, {"pending.callId": 1}):
                follow_ups[state["_id"]] = [p["callId"] for p in state["pending"] if p["callId"] in ids]
        # The waiting deliveries holding the number as a call's, by the same rule (only those keep their body).
        lines = set(spellings) if agent_line else set()
        inbox = db[WEBHOOK_INBOX].find({"state": INBOX_WAITING}, {"body": 1}, hint=INBOX_STATE_KEYS)
        deliveries = [entry["_id"] for entry in inbox if entry.get("body")
                      and _delivered_numbers(bytes(entry["body"]), self.region, lines).intersection(spellings)]
        return PersonRecords(spellings, analyzed, waiting, contact_ids, whole, follow_ups, deliveries, agent_line)

    def agent_line(self, spellings: list[str]) -> bool:
        """Whether a stored call has the number on its agent's side (one by each index)."""
        return any(self.db[CALLS].find_one({field: {"$in": spellings}, "direction": direction}, {"_id": 1},
                                           hint=index)
                   for field, direction, index in (("fromNumber", "outbound", FROM_NUMBER_INDEX_KEYS),
                                                   ("toNumber", "inbound", TO_NUMBER_INDEX_KEYS)))

    def find_person(self, phone: Phone) -> PersonRecords:
        """`find`, refusing a number known only as an agent's own line: erasing it would erase
        nothing of a person, and putting it on the suppression list would only keep out a customer
        it may later be."""
        found = self.find(phone)
        if found.agent_line and not any(found.counts().values()):
            raise AgentLineError(
                f"{mask_phone(phone.key)} is an agent's own line (the business's number its calls are made "
                "from or received on), and no customer's record of it is left: nothing was erased, nothing "
                "added to the suppression list. Give the number of the person to erase.")
        return found

    def sweep(self, phone: Phone) -> dict[str, int]:
        """Remove what the database holds of the number now; what was removed, per collection."""
        found = self.find(phone)
        db, now = self.db, utcnow()
        stamp = {"erasedAt": now, "transcriptRemovedAt": now, "updatedAt": now}
        # A lease dropped too: the attempt holding a waiting call writes nothing of it back.
        unset = {**{name: "" for name in PERSONAL_CALL_FIELDS}, **lease.RELEASED}
        removed = Counter()
        if found.analyzed_calls:
            removed["calls"] += db[CALLS].update_many({"callId": {"$in": found.analyzed_calls}}, {
                "$unset": {**unset, **{name: "" for name in ANALYSIS_TEXT_FIELDS}}, "$set": stamp}).modified_count
        if found.waiting_calls:
            skipped = analysis_document("skipped", attempted_at=now, skipped="erased")  # erased before analyzed
            removed["calls"] += db[CALLS].update_many({"callId": {"$in": found.waiting_calls}}, {
                "$unset": unset, "$set": {**stamp, "processed": True, "analysis": skipped}}).modified_count
        for name, collection, selectors in _removed_whole(found.spellings, found.call_ids, found.contact_ids):
            removed[name] = sum(db[collection].delete_many(selector).deleted_count for selector in selectors)
        for state_id, call_ids in found.follow_ups.items():
            # A sync running now may save its own copy of the list back: harmless, its writers skip the number.
            db[SYNC_STATE].update_one({"_id": state_id}, {"$pull": {"pending": {"callId": {"$in": call_ids}}}})
            removed["followUps"] += len(call_ids)
        if found.deliveries:
            removed["webhookInbox"] = db[WEBHOOK_INBOX].delete_many({"_id": {"$in": found.deliveries}}).deleted_count
        return {name: removed[name] for name in COLLECTIONS}


def _removed_whole(spellings: list[str], call_ids: list[str], contact_ids: list) -> list[tuple[str, str, list[dict]]]:
    """The documents of the number that erasure removes whole: (the name it reports them by, the
    collection, the selectors, each served by its own index), in the order they are removed (a link
    names the calls, a contact its activities, so each goes after what it helps find)."""
    number = {"$in": spellings}
    activities = [{"customerPhone": number}]  # status changes by number, decisions by call and by contact
    if call_ids:
        activities.append({"callId": {"$in": call_ids}})
    if contact_ids:
        activities.append({"contactId": {"$in": contact_ids}})
    return [("customerCalls", CUSTOMER_CALLS, [{"phone": number}]), ("activities", ACTIVITIES, activities),
            ("stageReviews", STAGE_REVIEWS, [{"customerPhone": number}]), ("contacts", CONTACTS, [{"phone": number}]),
            ("customers", CUSTOMERS, [{"phone": number}])]


def _delivered_numbers(body: bytes, region: str, agent_lines: set[str]) -> set[str]:
    """A delivery's numbers that may be a person's (`_people`), as the sync stores them (their keys,
    and as received); for a body the sync could not read, every string in it, which holds the number
    if anything does, unless the number is an agent's line (the body's sides cannot be told)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # the listener stores only JSON
        return set()
    try:
        execution = parse_execution(payload, region)
    except (MalformedExecution, RecursionError):
        return set() if agent_lines else set(_strings(payload))
    return {text for phone in _people(execution, agent_lines) for text in (phone.key, phone.raw)}


def _strings(value, depth: int = 0) -> list[str]:
    if isinstance(value, str):
        return [value]
    if depth > 20:
        return []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [text for item in items for text in _strings(item, depth + 1)]


def forget(db: Database, phone: Phone, hasher: PhoneHasher, region: str = DEFAULT_REGION) -> dict[str, int]:
    """Erase the number everywhere and keep it out of later syncs; what was removed. Idempotent:
    a second call finds nothing and changes nothing. `region`: as for `Eraser`."""
    suppressions = SuppressionList(db, hasher)
    suppressions.check_key()
    eraser = Eraser(db, region)
    eraser.find_person(phone)  # found again by the sweep, once the number is on the list
    digest = hasher.digest(phone.key)
    suppressions.add(digest)  # before anything is removed: see the module's docstring
    removed = eraser.sweep(phone)
    # One record per number (its hash), kept as evidence: when it was asked, when data was last
    # removed and how much. A sweep that found nothing leaves an existing record as it was.
    now = utcnow()
    update: dict = {"$setOnInsert": {"keyId": hasher.key_id, "requestedAt": now}}
    if any(removed.values()):
        update["$set"] = {"erasedAt": now}
        update["$inc"] = {f"removed.{name}": count for name, count in removed.items() if count}
    _upsert(db[ERASURES], digest, update)
    return removed


def _upsert(collection, digest: str, update: dict) -> None:
    """Upsert the number's document; another `forget` of the number inserting it first makes this
    an update."""
    selector = {"_id": collection.local_id(digest)}
    try:
        collection.update_one(selector, update, upsert=True)
    except DuplicateKeyError:
        collection.update_one(selector, update)


class PrivacyGuard:
    def __init__(self, suppressions: SuppressionList, eraser: Eraser):
        self.suppressions = suppressions
        self.eraser = eraser

    def admit(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> list[Execution]:
        """The executions that may be written: none of an erased number as `forget` finds it (the
        customer, or the caller of a call without a direction); the agent's own line never bars a call."""
        barred, lines = self._erased(executions)
        if not barred:
            return executions
        admitted = [e for e in executions if not any(phone.key in barred for phone in _people(e, lines))]
        recorder.add("suppressed", len(executions) - len(admitted), agent_id)
        return admitted

    def recheck(self, executions: list[Execution]) -> None:
        barred, lines = self._erased(executions)
        for phone in {p.key: p for e in executions for p in _people(e, lines) if p.key in barred}.values():
            log.info("a number was erased while a page holding it was written; erased again",
                     extra={"event": "erased_during_write"})
            self.eraser.sweep(phone)

    def _erased(self, executions: list[Execution]) -> tuple[set[str], set[str]]:
        """The erased numbers on these executions' people's sides, and of those the callers of calls
        without a direction known as an agent's line (on this page, or stored): rare, then looked up."""
        phones = {phone.key: phone for e in executions for phone in _people(e, set())}
        barred = self.suppressions.suppressed(phones)
        callers = barred & {e.from_phone.key for e in executions
                            if e.direction not in DIRECTIONS and e.from_phone is not None}
        if not callers:
            return barred, set()
        on_page = {line.key for e in executions if (line := _agent_side(e)) is not None}
        return barred, {key for key in callers
                        if key in on_page or self.eraser.agent_line(lookup_keys(phones[key]))}


def _people(execution: Execution, agent_lines: set[str]) -> list[Phone]:
    """The numbers on a call that may be a person's, as `forget` finds them: the customer's, and the
    caller of a call without a direction (who may have called in), unless one of `agent_lines`."""
    caller = execution.from_phone if execution.direction not in DIRECTIONS else None
    if caller is not None and caller.key in agent_lines:
        caller = None
    return [phone for phone in (execution.customer_phone, caller) if phone is not None]


def _agent_side(execution: Execution) -> Phone | None:
    """The agent's own line, on a call whose direction says which side it is."""
    return {"outbound": execution.from_phone, "inbound": execution.to_phone}.get(execution.direction)


BATCH_SIZE = 200
# Per pass: a backlog (the setting just turned on) drains over a few runs, each bounded.
MAX_BATCHES = 25
_OLDEST_FIRST = [("callAt", ASCENDING)]


@dataclass(frozen=True)
class RetentionPolicy:
    transcript_days: int | None = None
    record_days: int | None = None

    def transcript_expired(self, call_at: datetime, now: datetime) -> bool:
        return self.transcript_days is not None and call_at < now - timedelta(days=self.transcript_days)

    def record_expired(self, call_at: datetime, now: datetime) -> bool:
        return self.record_days is not None and call_at < now - timedelta(days=self.record_days)


class RetentionPass:
    def __init__(self, db: Database, policy: RetentionPolicy, stop: threading.Event | None = None, *,
                 batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES):
        self.calls = db[CALLS]
        self.policy = policy
        self.stop = stop or threading.Event()
        self.batch_size = batch_size
        self.max_batches = max_batches

    def run(self, recorder: RunRecorder) -> None:
        """Counted on the run: `retentionPasses`, `callsRemoved`, `transcriptsRemoved`. A database
        error ends the pass as an error on the run; the next run goes on from where it stopped."""
        if not (self.policy.transcript_days or self.policy.record_days):
            return
        recorder.add("retentionPasses")
        now = utcnow()
        try:
            if self.policy.record_days:
                cutoff = now - timedelta(days=self.policy.record_days)
                recorder.add("callsRemoved", self._in_batches(
                    {"callAt": {"$lt": cutoff}}, CALL_AGE_INDEX_KEYS,
                    lambda ids: self.calls.delete_many({"_id": {"$in": ids}}).deleted_count))
            if self.policy.transcript_days:
                cutoff = now - timedelta(days=self.policy.transcript_days)
                recorder.add("transcriptsRemoved", self._in_batches(
                    {"transcriptRemovedAt": None, "callAt": {"$lt": cutoff}}, TRANSCRIPT_AGE_INDEX_KEYS,
                    lambda ids: self._strip(ids, now)))
        except PyMongoError as exc:
            recorder.error(f"retention pass stopped ({describe_failure(exc)}); the next run goes on",
                           code="retention_failed")

    def _in_batches(self, selector: dict, index: list, act: Callable[[list], int]) -> int:
        """Oldest first, by the index named (a pass must never scan the calls)."""
        done = 0
        for _ in range(self.max_batches):
            ids = [doc["_id"] for doc in self.calls.find(selector, {"_id": 1}, sort=_OLDEST_FIRST, limit=self.batch_size,
                                                           hint=index)]
            if ids:
                done += act(ids)
            if len(ids) < self.batch_size or self.stop.is_set():
                break
        return done

    def _strip(self, ids: list, now: datetime) -> int:
        # `updatedAt` too: a consumer following "what changed since T" learns its copy must go.
        return self.calls.update_many({"_id": {"$in": ids}}, {
            "$unset": {name: "" for name in TRANSCRIPT_FIELDS},
            "$set": {"transcriptRemovedAt": now, "updatedAt": now}}).modified_count
