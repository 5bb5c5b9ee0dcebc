"""The writers of a page: Bolna executions -> `calls` (the call processor's first phase, one
document per Bolna call id) and -> `customers` (the CRM sync, one record per phone number), each
page in batched upserts that survive a lost race with another daemon (`bulk_upsert`).

A customer page: one lookup of the page's numbers under every spelling (`records_by_phone`), a
link per call in `customer_calls` (what counts a customer's calls, exactly, without an array that
grows with every call), one count of the links per number, one batch of customer upserts, the
status changes they made and the values a lock held back as activities, and the links marked
applied — last, so a page cut off by a crash is taken again and every step is idempotent.

Legacy customers, written before every spelling of a number meant one customer: two spellings of
one number (`09876543210` and `+919876543210`) stored as two records are merged into one by the
same rules as any update (the newest value of each field, the highest-ranked status), and the
others removed (`merge_records`). A record's `callIds` array (the old way of counting) becomes one
link per call in `customer_calls`, so the count stays exact and the array stops growing.
"""
from __future__ import annotations

from collections.abc import Container
from datetime import datetime
from typing import Any

from pymongo import InsertOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from models.call import call_upsert, new_call
from models.customer import (EPOCH, FIRST_STATUS_CHANGE, PENDING_HELD_BACK, PENDING_STATUS_CHANGES, PROFILE_FIELDS,
                             CustomerCall, StatusRanks, change_reason, customer_call, customer_insert, customer_upsert,
                             merge_update)
from models.execution import Execution, execution_id, linked_call_id, parse_time
from models.locks import HELD_ON_CUSTOMER, held_back_key
from services.database import ACTIVITIES, CALLS, CUSTOMER_CALLS, CUSTOMERS, DUPLICATE_KEY
from services.privacy import PrivacyGuard, RetentionPolicy
from services.run_records import RunRecorder
from utils.clock import utcnow
from utils.phone import Phone, lookup_keys, mask_phone

STATUS_CHANGE = "status_change"


class CallWriter:
    def __init__(self, db: Database, guard: PrivacyGuard, retention: RetentionPolicy = RetentionPolicy()):
        self.calls = db[CALLS]
        self.guard = guard
        self.retention = retention

    def stored(self, items: list[dict]) -> dict[str, bool]:
        """The listed calls stored already, each with whether it needs no write: stored terminal
        and unchanged, the same `updated_at` where the listing has one (full records), else the
        same status (the trimmed projection has none)."""
        listed = {call_id: item for item in items if (call_id := execution_id(item))}
        if not listed:
            return {}
        # By callId alone, `terminal` checked here: a filter on a field outside the index keeps
        # a simple planner (the test run's wire server) off the index; MongoDB's reads the same.
        stored = self.calls.find({"callId": {"$in": list(listed)}},
                                 {"callId": 1, "status": 1, "bolnaUpdatedAt": 1, "terminal": 1, "_id": 0})
        return {doc["callId"]: doc.get("terminal") is True and _same(doc, listed[doc["callId"]]) for doc in stored}

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str,
              stored_ids: Container[str] = ()) -> None:
        """`stored_ids`: the calls believed stored, sent straight as their update (right either way:
        it inserts one that is not); the others as a plain insert, which the unique `callId`
        refuses for one stored meanwhile, and their update follows."""
        now = utcnow()
        executions = self.guard.admit(executions, recorder, agent_id)
        # A backfill or a follow-up reaching past the retention would store again what it removed.
        kept = [e for e in executions if not self.retention.record_expired(e.created_at, now)]
        recorder.add("expired", len(executions) - len(kept), agent_id)
        for execution in kept:
            if execution.extracted_error:
                recorder.error(f"call {execution.id}: {execution.extracted_error}; stored as received",
                               code="bad_extracted_data", call_id=execution.id, agent_id=agent_id)
        with_transcript = [not self.retention.transcript_expired(e.created_at, now) for e in kept]
        upserts = [call_upsert(e, now, with_transcript=keep) for e, keep in zip(kept, with_transcript)]
        inserted, updated = bulk_upsert(self.calls, [
            upsert if e.id in stored_ids else InsertOne(new_call(e, now, with_transcript=keep))
            for upsert, e, keep in zip(upserts, kept, with_transcript)], retry_as=upserts)
        self.guard.recheck(kept)
        recorder.add("inserted", inserted, agent_id)
        recorder.add("updated", updated, agent_id)


def _same(stored: dict, item: dict) -> bool:
    updated_at = parse_time(item.get("updated_at"))
    if updated_at is not None:
        return stored.get("bolnaUpdatedAt") == updated_at
    return stored.get("status") == str(item.get("status") or "").lower()


class CustomerWriter:
    def __init__(self, db: Database, ranks: StatusRanks, guard: PrivacyGuard):
        self.guard = guard
        self.customers = db[CUSTOMERS]
        self.links = db[CUSTOMER_CALLS]
        self.activities = db[ACTIVITIES]
        self.ranks = ranks

    def stored(self, items: list[dict]) -> dict[str, bool]:
        """The listed calls linked to their customer, each with whether it is applied: a terminal
        call's customer data is final."""
        ids = [call_id for item in items if (call_id := execution_id(item))]
        if not ids:
            return {}
        # By id alone, `applied` checked here: a planner then has nothing to do but the _id index.
        links = self.links.find({"_id": {"$in": [self.links.local_id(i) for i in ids]}}, {"applied": 1, "callId": 1})
        return {linked_call_id(link): bool(link.get("applied")) for link in links}

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str,
              stored_ids: Container[str] = ()) -> None:
        """`stored_ids` is not needed: the read of the page's numbers below tells a customer to
        insert from one to update."""
        executions = self.guard.admit(executions, recorder, agent_id)
        by_phone = self._by_phone(executions, recorder, agent_id)
        if not by_phone:
            return
        now = utcnow()
        found = records_by_phone(self.customers, [phone for phone, _ in by_phone.values()])
        # Links first, legacy ones too: a merge below removes the `callIds` they come from. None is
        # applied until the customer is written under its number's key: until then a restart takes
        # the page again, and merges and rewrites the record. Applied at once, a crash before that
        # left a legacy link's call skipped by every later run, and the merged record under its old
        # spelling for good (issue 23).
        legacy = sorted({(key, call_id) for key, docs in found.items()
                         for doc in docs for call_id in legacy_call_ids(doc)})
        bulk_upsert(self.links, [
            UpdateOne({"_id": self.links.local_id(call_id)},
                      {"$setOnInsert": {"callId": call_id, "phone": key, "applied": False}}, upsert=True)
            for key, call_id in legacy] + [
            UpdateOne({"_id": self.links.local_id(call.call_id)}, {"$set": {"phone": key, "at": call.at},
                                                                   "$setOnInsert": {"callId": call.call_id, "applied": False}},
                      upsert=True)
            for key, (_phone, calls) in by_phone.items() for call in calls])
        stored = {key: merge_records(self.customers, key, docs, self.ranks) for key, docs in found.items()}
        counts, legacy_keys, unapplied = self._counts(list(by_phone))
        upserts = [customer_upsert(phone, calls, now, ranks=self.ranks, call_count=counts.get(key, 0),
                                   existing_id=stored[key]["_id"] if key in stored else None)
                   for key, (phone, calls) in by_phone.items()]
        inserted, updated = bulk_upsert(self.customers, [
            upsert if key in stored else customer_insert(phone, calls, now, ranks=self.ranks,
                                                         call_count=counts.get(key, 0))
            for upsert, (key, (phone, calls)) in zip(upserts, by_phone.items())], retry_as=upserts)
        # Before the links are marked applied: a page cut off before this is taken again, and
        # logs what this write (or any earlier one) left pending.
        self._log_pending(list(by_phone), unapplied, now)
        call_ids = [call.call_id for _phone, calls in by_phone.values() for call in calls]
        if legacy_keys:
            self.links.update_many({"phone": {"$in": legacy_keys}, **LEGACY_LINK}, {"$set": {"applied": True}})
        self.links.update_many({"_id": {"$in": [self.links.local_id(i) for i in call_ids]}}, {"$set": {"applied": True}})
        self.guard.recheck(executions)
        recorder.add("inserted", inserted, agent_id)
        recorder.add("updated", updated, agent_id)

    def _by_phone(self, executions: list[Execution], recorder: RunRecorder,
                  agent_id: str) -> dict[str, tuple[Phone, list[CustomerCall]]]:
        by_phone: dict[str, tuple[Phone, list[CustomerCall]]] = {}
        for execution in executions:
            if not execution.terminal:
                continue  # its outcome and extracted data are not final yet; a later run takes it
            phone = execution.customer_phone
            if phone is None:
                # Not an error: a withheld caller id is how some calls come. The call keeps the reason.
                recorder.add(f"{execution.customer_phone_missing}Number", 1, agent_id)
                continue
            if not phone.valid:
                recorder.error(f"call {execution.id}: phone {mask_phone(phone.raw)} is not a valid number; "
                               "stored as given with phoneValid false",
                               code="invalid_phone", call_id=execution.id, agent_id=agent_id)
            if execution.extracted_error:
                recorder.error(f"call {execution.id}: {execution.extracted_error}; customer written "
                               "without extracted fields", code="bad_extracted_data",
                               call_id=execution.id, agent_id=agent_id)
            by_phone.setdefault(phone.key, (phone, []))[1].append(customer_call(execution))
        return by_phone

    def _counts(self, keys: list[str]) -> tuple[dict[str, int], list[str], dict[str, set[str]]]:
        """The calls counted on each number, the numbers with legacy links still to apply
        (`LEGACY_LINK`): known from the links themselves, so a run after a crash anywhere in a
        merge applies them too, and the steady state pays no write for them; and each number's
        calls whose link is not applied (this page's new ones, and any a crash cut off)."""
        groups = list(self.links.aggregate([
            {"$match": {"phone": {"$in": keys}}},
            {"$group": {"_id": "$phone", "count": {"$sum": 1}, "legacy": {"$sum": {"$cond": [LEGACY_LINK_EXPRESSION, 1, 0]}},
                        "unapplied": {"$addToSet": {"$cond": [{"$eq": ["$applied", False]}, "$callId", None]}}}}]))
        return ({group["_id"]: group["count"] for group in groups}, [group["_id"] for group in groups if group["legacy"]],
                {group["_id"]: set(group["unapplied"]) - {None} for group in groups})

    def _log_pending(self, keys: list[str], unapplied: dict[str, set[str]], now: datetime) -> None:
        """One activity per status change the writes made, and one per call whose values a lock
        held back, as each write recorded them on its customer: a plain insert's first status
        (`FIRST_STATUS_CHANGE`), while the link of its call is not applied (`unapplied`: the
        links are marked applied only after this log, so a page cut off before it, or raced by
        another writer of the call, logs it again); an upsert's changes and held values
        (`PENDING_STATUS_CHANGES`, `PENDING_HELD_BACK`), then taken off the customer. Keyed by the
        call, so what is logged twice (two writers, a retry) is one activity; what no write did
        was never recorded. Read back for every number of the page, in one query: a lock set or
        lifted after the page's read decides its write, so what the read saw cannot tell which
        records to read."""
        # The page's records by the index alone, those with something to log picked here: a clause
        # on the arrays beside it made the wire server scan the collection (8 s of a 2,000-call
        # first sync).
        operations = []
        pending = []
        for customer in self.customers.find({"phone": {"$in": keys}}, {
                "phone": 1, FIRST_STATUS_CHANGE: 1, PENDING_STATUS_CHANGES: 1, PENDING_HELD_BACK: 1}):
            first = customer.get(FIRST_STATUS_CHANGE)
            changes = [*([first] if first and first["callId"] in unapplied.get(customer["phone"], ()) else []),
                       *(customer.get(PENDING_STATUS_CHANGES) or [])]
            if customer.get(PENDING_STATUS_CHANGES) or customer.get(PENDING_HELD_BACK):
                pending.append(customer)
            about = {"customerPhone": customer["phone"], "customerId": customer["_id"]}
            operations += [UpdateOne({"callId": change["callId"], "type": STATUS_CHANGE, "round": 0},
                                     {"$setOnInsert": {**about, "from": change["from"], "to": change["to"],
                                                       "callAt": change["callAt"], "at": now,
                                                       "reason": change_reason(change["from"], change["to"], self.ranks)}},
                                     upsert=True)
                           for change in changes]
            held: dict[str, dict[str, Any]] = {}
            for entry in customer.get(PENDING_HELD_BACK) or []:
                held.setdefault(entry["callId"], {})[f"fields.{entry['field']}"] = entry["value"]
            # Field by field: two pages holding different fields of one call add up.
            operations += [UpdateOne(held_back_key(call_id, 0, HELD_ON_CUSTOMER),
                                     {"$set": fields, "$setOnInsert": {**about, "reason": "locked by a person", "at": now}},
                                     upsert=True)
                           for call_id, fields in held.items()]
        bulk_upsert(self.activities, operations)
        if not pending:
            return
        # Only the entries logged: one an upsert added since the read stays for the next log.
        self.customers.bulk_write([
            UpdateOne({"_id": customer["_id"]}, {"$pull": {
                PENDING_STATUS_CHANGES: {"callId": {"$in": [change["callId"]
                                                            for change in customer.get(PENDING_STATUS_CHANGES) or []]}},
                PENDING_HELD_BACK: {"$in": customer.get(PENDING_HELD_BACK) or []}}})
            for customer in pending], ordered=False)


def legacy_call_ids(doc: dict) -> list[str]:
    """The call ids of a record's `callIds`: an array, or in some old records a single id."""
    call_ids = doc.get("callIds")
    if isinstance(call_ids, str):
        return [call_ids]
    return [call_id for call_id in call_ids if isinstance(call_id, str)] if isinstance(call_ids, list) else []


# A link made from a `callIds` array whose call no page has brought yet (a page's link has its
# call's `at`), not applied: the writer applies it once its number's customer is written under
# the number's key. Told from the links themselves, so a run after a crash applies it even when
# the `callIds` it came from were already merged away. As a query, and as an expression.
LEGACY_LINK = {"applied": False, "at": {"$exists": False}}
LEGACY_LINK_EXPRESSION = {"$and": [{"$eq": ["$applied", False]}, {"$eq": [{"$ifNull": ["$at", None]}, None]}]}


def merge_records(customers: Collection, key: str, docs: list[dict], ranks: StatusRanks) -> dict:
    """Fold `docs` (the one to keep first) into the first, stored under the number's `key`, and
    delete the others; returns the kept record as it now is. Safe to run twice at once: both runs
    pick the same record and fields."""
    keep, others = docs[0], docs[1:]
    if not others and "callIds" not in keep and keep.get("phone") == key:
        return keep
    # Folded here, applied on the server by the update's rules: a call written to the kept record
    # since `docs` were read (another page, a webhook, the other run) stays. Re-keyed in the same
    # write that drops `callIds`: the record is never without both its array and the key its
    # links are under, whatever write a crash stops at.
    kept = customers.find_one_and_update({"_id": keep["_id"]},
                                         merge_update({**_fold(docs, ranks), "phone": key}, ranks),
                                         return_document=ReturnDocument.AFTER)
    if others:
        customers.delete_many({"_id": {"$in": [doc["_id"] for doc in others]}})
    return kept if kept is not None else {k: v for k, v in keep.items() if k != "callIds"}


def _fold(docs: list[dict], ranks: StatusRanks) -> dict[str, Any]:
    newest = max(docs, key=lambda doc: _at(doc, "lastCallAt"))
    merged: dict[str, Any] = {name: newest.get(name) for name in ("lastCallAt", "lastCallId", "agentId", "phoneRaw")
                              if newest.get(name) is not None}
    with_status = [doc for doc in docs if doc.get("status") is not None]
    if with_status:
        best = max(with_status, key=lambda doc: ranks.key(doc["status"], _at(doc, "statusAt")))
        merged.update({name: best.get(name) for name in ("status", "statusAt", "statusCallId")
                       if best.get(name) is not None})
    fields_at = {}
    for name in PROFILE_FIELDS:
        having = [doc for doc in docs if doc.get(name) not in (None, "")]
        if having:
            source = max(having, key=lambda doc: _field_at(doc, name))
            merged[name], fields_at[name] = source[name], _field_at(doc=source, name=name)
    if fields_at:
        merged["fieldsAt"] = fields_at
    with_extracted = [doc for doc in docs if doc.get("extracted")]
    if with_extracted:
        source = max(with_extracted, key=lambda doc: doc.get("extractedAt") or _at(doc, "lastCallAt"))
        merged["extracted"] = source["extracted"]
        merged["extractedAt"] = source.get("extractedAt") or _at(source, "lastCallAt")
    merged["callCount"] = max(max(_count(doc), len(legacy_call_ids(doc))) for doc in docs)
    created = [doc["createdAt"] for doc in docs if isinstance(doc.get("createdAt"), datetime)]
    if created:
        merged["createdAt"] = min(created)
    return merged


def _count(doc: dict) -> int:
    count = doc.get("callCount")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _at(doc: dict, name: str) -> datetime:
    value = doc.get(name)
    return value if isinstance(value, datetime) else EPOCH


def _field_at(doc: dict, name: str) -> datetime:
    """When a record's field was set: its own time, or (written before those existed) its newest call."""
    stored = (doc.get("fieldsAt") or {}).get(name)
    return stored if isinstance(stored, datetime) else _at(doc, "lastCallAt")


def records_by_phone(collection: Collection, phones: list[Phone]) -> dict[str, list[dict]]:
    """The stored records of each number, by its key, in one query; empty lists are left out.
    The first of each list is the one to keep: the record already keyed by the normalized number,
    else the oldest by `_id` (every process picks the same)."""
    keys = {phone.key: lookup_keys(phone) for phone in phones}
    owner = {spelling: key for key, variants in keys.items() for spelling in variants}
    if not owner:
        return {}
    found: dict[str, list[dict]] = {}
    for doc in collection.find({"phone": {"$in": list(owner)}}):
        found.setdefault(owner[doc["phone"]], []).append(doc)
    for key, docs in found.items():
        docs.sort(key=lambda doc: (doc["phone"] != key, str(doc["_id"])))
    return found


def bulk_upsert(collection: Collection, operations: list[UpdateOne | InsertOne],
                retry_as: list[UpdateOne] | None = None) -> tuple[int, int]:
    """Run upserts in one round trip; returns (inserted, updated).

    Two daemons upserting the same new key at once make one of them hit the unique index;
    the document exists by then, so running those operations again turns them into updates.
    `retry_as`: what to run again in place of each operation (for an `InsertOne` of a document
    that may be stored already, its upsert)."""
    if not operations:
        return 0, 0
    try:
        result = collection.bulk_write(operations, ordered=False)
        return result.upserted_count + result.inserted_count, result.modified_count
    except BulkWriteError as exc:
        details = exc.details
        errors = details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        again = collection.bulk_write([(retry_as or operations)[error["index"]] for error in errors], ordered=False)
        inserted = details.get("nUpserted", 0) + details.get("nInserted", 0) + again.upserted_count
        return inserted, details.get("nModified", 0) + again.modified_count
