"""The `customers` document, built from the calls of one phone number.

A customer update is an aggregation-pipeline update, so it is atomic and idempotent on the
server, and right whatever order pages, agents and replicas deliver the calls in:
- `status` is the highest-ranked status the calls have shown (`StatusRanks`); among equal ranks
  the newest call's;
- each profile field follows the newest call that set it (`fieldsAt` keeps each one's time);
- `callCount` is counted elsewhere (one link per call) and only ever grows here.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from bson import ObjectId
from pymongo import UpdateOne

from models.execution import Execution, Extraction, Path
from models.locks import LOCKED, SUGGESTED
from utils.config import (BOOKED, CALLBACK, CONTACTED, DEFAULT_PRECEDENCE, INTERESTED, NO_ANSWER, NOT_INTERESTED,
                          VOICEMAIL)
from utils.clock import EPOCH
from utils.phone import Phone

# Customer field -> extraction names that mean it (agents' extraction prompts vary).
PROFILE_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name", "customer_name", "user_name", "full_name", "caller_name"),
    "email": ("email", "email_address", "user_email", "customer_email"),
    "interest": ("interest", "interested_in", "product", "product_interest", "requirement"),
    "notes": ("notes", "note", "remarks", "comments"),
    "address": ("address", "location", "city", "customer_address"),
}
_BOOKED_KEYS = ("appointment_booked", "booked", "is_booked", "booking_confirmed")
_CALLBACK_KEYS = ("callback_user", "callback_requested", "call_back")
_INTEREST_KEYS = ("user_interested", "interested", "is_interested")

# The status changes an upsert made, kept on the record by the upsert itself until the writer has
# logged each as an activity: what a change was is known only to the write that made it.
PENDING_STATUS_CHANGES = "pendingStatusChanges"
# Likewise the values a lock held back (`{field, value, callId, at}`): whether a lock holds is
# decided by the update, against the record as it is then, never by what was read before it.
PENDING_HELD_BACK = "pendingHeldBack"
# The change a plain insert made (none to the record's first status; `customer_insert`), kept on the
# record for good, never taken off: the writer logs it while the link of its call is not applied
# (the page that inserted it, or one taken again after a crash cut that page off), so a first sync
# pays no `$pull` of it. The upsert records what it changes under `PENDING_STATUS_CHANGES`.
FIRST_STATUS_CHANGE = "firstStatusChange"


class StatusRanks:
    """A status's rank: higher wins. A status missing from the precedence ranks 0, below all."""

    def __init__(self, precedence: Iterable[Iterable[str]] = DEFAULT_PRECEDENCE):
        self.groups = tuple(tuple(group) for group in precedence)
        self._rank = {status: len(self.groups) - index for index, group in enumerate(self.groups)
                      for status in group}

    def of(self, status: str | None) -> int:
        return -1 if status is None else self._rank.get(status, 0)

    # The status rule, once: a status replaces another when its key is greater (its rank, then
    # the newer call). `wins` applies it here, `wins_expression` on the server, from the same key.
    def key(self, status: str | None, at: datetime | None) -> tuple[int, datetime]:
        return self.of(status), at or EPOCH

    def wins(self, status: str | None, at: datetime | None, over: str | None, over_at: datetime | None) -> bool:
        return self.key(status, at) > self.key(over, over_at)

    def wins_expression(self, status: str | None, at: datetime | None) -> dict:
        """True on the server when `status` (of a call at `at`) replaces the stored one, ranked
        there by the table `of` reads (so a changed precedence applies to stored records too)."""
        branches = [{"case": {"$eq": ["$status", name]}, "then": rank} for name, rank in self._rank.items()]
        stored_rank = {"$cond": [{"$eq": [{"$ifNull": ["$status", None]}, None]}, -1,
                                 {"$switch": {"branches": branches, "default": 0}}]}
        rank, at = self.key(status, at)
        return {"$or": [{"$gt": [rank, stored_rank]}, {"$and": [{"$eq": [rank, stored_rank]},
                                                                {"$gt": [at, {"$ifNull": ["$statusAt", EPOCH]}]}]}]}


@dataclass
class CustomerCall:
    """What one call says about its customer."""
    call_id: str
    at: datetime
    agent_id: str | None
    phone_raw: str
    status: str
    profile: dict[str, Any]
    extracted: dict[str, Any]  # the extraction less what became profile fields and the status


def _truthy(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "y", "1", "booked", "confirmed", "interested"):
            return True
        if text in ("false", "no", "n", "0", "not interested", "none"):
            return False
    return None


def _first_flag(extraction: Extraction, keys: tuple[str, ...], used: set[Path]) -> bool | None:
    for key in keys:
        found = extraction.find(key)
        if found is not None and (flag := _truthy(found[1])) is not None:
            used.add(found[0])
            return flag
    return None


def customer_status(execution: Execution, extraction: Extraction, used: set[Path]) -> str:
    """The customer's status after this call, from its outcome and what was extracted (the paths
    read are added to `used`). Answered as Bolna documents it: `completed` with a conversation
    (duration above 0) and no voicemail."""
    if execution.voicemail:
        return VOICEMAIL
    if not execution.connected:
        return NO_ANSWER
    booked = extraction.find("appointment_status")
    if _first_flag(extraction, _BOOKED_KEYS, used) or (booked and str(booked[1]).lower() == "booked"):
        return BOOKED
    if _first_flag(extraction, _CALLBACK_KEYS, used):
        return CALLBACK
    interested = _first_flag(extraction, _INTEREST_KEYS, used)
    if interested is not None:
        return INTERESTED if interested else NOT_INTERESTED
    return CONTACTED


def customer_call(execution: Execution) -> CustomerCall:
    extraction = execution.extraction or Extraction()
    used: set[Path] = set()
    profile = {}
    for field_name, keys in PROFILE_FIELDS.items():
        for key in keys:
            found = extraction.find(key)
            if found is not None and found[1] not in (None, "", [], {}):
                profile[field_name] = found[1]
                used.add(found[0])
                break
    status = customer_status(execution, extraction, used)
    phone_raw = execution.customer_phone.raw if execution.customer_phone else ""
    return CustomerCall(execution.id, execution.created_at, execution.agent_id, phone_raw, status, profile,
                        extraction.without(used))


def customer_upsert(phone: Phone, calls: list[CustomerCall], now: datetime, *, ranks: StatusRanks,
                    call_count: int, existing_id: object = None) -> UpdateOne:
    """One upsert for all of a page's calls from one number: onto `existing_id` (the record found
    under any spelling of the number) or a record keyed by the normalized number. The stored
    `phone` becomes the normalized key. `call_count`: the calls counted for the number so far.
    The record these calls make (`new_customer`) is folded into the stored one by the rules of
    `_fold_stages`, and a field a person locked (models/locks.py) is kept under `suggested`
    instead: all in the one atomic update, so a lock set a moment before always wins."""
    record = new_customer(phone, calls, now, ranks=ranks, call_count=call_count)
    sources = {"status": record["statusCallId"],
               **{name: call.call_id for name, (_value, call) in _newest_per_field(calls).items()}}
    if "extracted" in record:
        sources["extracted"] = _newest([c for c in calls if c.extracted]).call_id
    decide, stage = _fold_stages(record, ranks, sources)
    decide["_status_change"] = {"from": {"$ifNull": ["$status", None]}, "to": {"$literal": record["status"]},
                                "callId": {"$literal": record["statusCallId"]},
                                "callAt": {"$literal": record["statusAt"]}}
    stage.update({
        "phoneValid": phone.valid,
        "updatedAt": now,
        PENDING_STATUS_CHANGES: {"$cond": [
            {"$and": ["$_take_status", {"$ne": [{"$ifNull": ["$status", None]}, record["status"]]}]},
            {"$concatArrays": [{"$ifNull": [f"${PENDING_STATUS_CHANGES}", []]}, ["$_status_change"]]},
            f"${PENDING_STATUS_CHANGES}"]},
    })
    return UpdateOne(
        {"_id": existing_id} if existing_id is not None else {"phone": phone.key},
        [{"$set": decide}, {"$set": stage}, {"$unset": list(decide)}],
        upsert=True,
    )


def customer_insert(phone: Phone, calls: list[CustomerCall], now: datetime, *, ranks: StatusRanks,
                    call_count: int) -> UpdateOne:
    """The write of a number new when read: the record `customer_upsert` would make of these calls
    (`new_customer`), set on insert onto a fresh `_id`, which always inserts. The server stores it
    without evaluating a pipeline; a record of the number written since the read makes the insert
    hit the unique `phone`, and the upsert is then run in its place (`bulk_upsert(retry_as=...)`).
    An update, not an `InsertOne`: a bulk write sends inserts and updates as two commands, and a
    page's new and stored numbers stay one round trip."""
    return UpdateOne({"_id": ObjectId()}, {"$setOnInsert": new_customer(phone, calls, now, ranks=ranks,
                                                                        call_count=call_count)}, upsert=True)


def new_customer(phone: Phone, calls: list[CustomerCall], now: datetime, *, ranks: StatusRanks,
                 call_count: int) -> dict:
    """The record these calls make where none is stored; `customer_upsert` folds it into a stored
    one. `tests/test_plain_inserts.py` checks both make the same record."""
    newest = _newest(calls)
    best = _best_status(calls, ranks)
    fields = _newest_per_field(calls)
    record = {
        "phone": phone.key, "phoneValid": phone.valid, "phoneRaw": newest.phone_raw, "lastCallAt": newest.at,
        "lastCallId": newest.call_id, "agentId": newest.agent_id,
        "status": best.status, "statusAt": best.at, "statusCallId": best.call_id,
        "callCount": max(call_count, 0),
        "fieldsAt": {name: fields[name][1].at for name in PROFILE_FIELDS if name in fields},
        "createdAt": now, "updatedAt": now,
        FIRST_STATUS_CHANGE: {"from": None, "to": best.status, "callId": best.call_id, "callAt": best.at},
        **{name: value for name, (value, _source) in fields.items()},
    }
    with_extracted = [c for c in calls if c.extracted]
    if with_extracted:
        source = _newest(with_extracted)
        record.update(extracted=source.extracted, extractedAt=source.at)
    return record


def merge_update(merged: dict[str, Any], ranks: StatusRanks) -> list[dict]:
    """The update folding `merged` (services/writers.py: what several records of one number hold,
    each field by the rules above) into the record kept, by the rules of `_fold_stages`: a call
    written to it since the records were read is never undone."""
    decide, stage = _fold_stages(merged, ranks)
    return [*([{"$set": decide}] if decide else []), {"$set": stage}, {"$unset": [*decide, "callIds"]}]


# The stored fields an offered field carries with it when it is taken.
_CARRIED = {"status": ("status", "statusAt", "statusCallId"), "extracted": ("extracted", "extractedAt")}


def _fold_stages(record: dict[str, Any], ranks: StatusRanks, sources: dict[str, str] | None = None
                 ) -> tuple[dict, dict]:
    """The two `$set` stages (decisions, then values) folding `record` into the stored record, judged
    on the server against the record as it is then (a status never moves down, a field never goes
    back to an older value). With `sources` (the call each offered field comes from), a field a
    person locked is not taken but kept under `suggested`."""
    offers: dict[str, tuple[dict, Any, datetime]] = {}  # (condition, value, time) of what `record` would change
    if record.get("status") is not None:
        offers["status"] = (ranks.wins_expression(record["status"], record.get("statusAt")), record["status"],
                            record.get("statusAt"))
    fields_at = record.get("fieldsAt") or {}
    for name, at in fields_at.items():
        offers[name] = (_newer_than_stored(name, at, f"$fieldsAt.{name}"), record[name], at)
    if record.get("extracted"):
        offers["extracted"] = (_newer_than_stored("extracted", record["extractedAt"], "$extractedAt"),
                               record["extracted"], record["extractedAt"])
    decide: dict[str, Any] = {}
    stage: dict[str, Any] = {"callCount": {"$max": [{"$ifNull": ["$callCount", 0]}, record.get("callCount", 0)]}}
    if record.get("phone") is not None:
        stage["phone"] = {"$literal": record["phone"]}  # the normalized key
    if record.get("lastCallAt") is not None:
        decide["_newer"] = {"$gt": [record["lastCallAt"], {"$ifNull": ["$lastCallAt", EPOCH]}]}
        stage.update({name: _if("$_newer", record.get(name), f"${name}")
                      for name in ("lastCallAt", "lastCallId", "agentId", "phoneRaw") if name in record})
    for name, (condition, _value, _at) in offers.items():
        decide[f"_take_{name}"] = condition if sources is None else {"$and": [{"$not": [_locked(name)]}, condition]}
        if sources is not None:
            decide[f"_hold_{name}"] = {"$and": [_locked(name), condition]}
        stage.update({carried: _if(f"$_take_{name}", record.get(carried), f"${carried}")
                      for carried in _CARRIED.get(name, (name,))})
    stage["fieldsAt"] = {name: (_if(f"$_take_{name}", fields_at[name], _stored_field_at(name)) if name in fields_at
                                else _stored_field_at(name)) for name in PROFILE_FIELDS}
    if record.get("createdAt") is not None:
        stage["createdAt"] = {"$min": [{"$ifNull": ["$createdAt", record["createdAt"]]}, record["createdAt"]]}
    if sources is not None:
        stage[SUGGESTED] = {"$cond": [{"$or": [f"$_hold_{name}" for name in offers]}, {"$mergeObjects": [
            f"${SUGGESTED}", {name: _if(f"$_hold_{name}", {"value": value, "callId": sources[name], "at": at},
                                        f"${SUGGESTED}.{name}") for name, (_condition, value, at) in offers.items()}]},
            f"${SUGGESTED}"]}
        # A hold already suggested from the same call was noted by the write that suggested it
        # (a page taken again, two writers of one call): noted once, logged once. Judged on the
        # suggestions as they were before this update (`_suggested`), which the stage replaces.
        decide["_suggested"] = f"${SUGGESTED}"
        noted = {name: {"$and": [f"$_hold_{name}",
                                 {"$ne": [{"$ifNull": [f"$_suggested.{name}.callId", None]}, sources[name]]}]}
                 for name in offers}
        stage[PENDING_HELD_BACK] = {"$cond": [{"$or": list(noted.values())}, {"$concatArrays": [
            {"$ifNull": [f"${PENDING_HELD_BACK}", []]},
            *[{"$cond": [note, {"$literal": [{"field": name, "value": offers[name][1], "callId": sources[name],
                                              "at": offers[name][2]}]}, []]} for name, note in noted.items()]]},
            f"${PENDING_HELD_BACK}"]}
    return decide, stage


def _newest(calls: list[CustomerCall]) -> CustomerCall:
    return max(calls, key=lambda c: (c.at, c.call_id))


def _best_status(calls: list[CustomerCall], ranks: StatusRanks) -> CustomerCall:
    return max(calls, key=lambda c: (*ranks.key(c.status, c.at), c.call_id))


def _newest_per_field(calls: list[CustomerCall]) -> dict[str, tuple[Any, CustomerCall]]:
    fields: dict[str, tuple[Any, CustomerCall]] = {}
    for call in sorted(calls, key=lambda c: (c.at, c.call_id)):
        for name, value in call.profile.items():
            fields[name] = (value, call)
    return fields


def _locked(field: str) -> dict:
    """True on the server while a person holds `field` (models/locks.py)."""
    return {"$in": [field, {"$ifNull": [f"${LOCKED}", []]}]}


def _newer_than_stored(field: str, at: datetime, stored_at: str) -> dict:
    """Take a value when the record lacks it, or when its call is newer than the one that set
    the stored value. A record written before per-field times existed counts as set by its
    newest call."""
    return {"$or": [{"$eq": [{"$ifNull": [f"${field}", None]}, None]},
                    {"$gt": [at, {"$ifNull": [stored_at, {"$ifNull": ["$lastCallAt", EPOCH]}]}]}]}


def _stored_field_at(field: str) -> dict:
    """The time of the stored value of `field`, kept: its own, or for a value written before
    per-field times existed (a legacy record) its newest call as read now, pinned. Left to
    follow `lastCallAt`, it would move forward with every newer call that does not name the
    field, and a call that does, newer than the value's but older than those, could never
    replace it (issue 23, found by the model test's long profile)."""
    return {"$cond": [{"$eq": [{"$ifNull": [f"${field}", None]}, None]}, f"$fieldsAt.{field}",
                      {"$ifNull": [f"$fieldsAt.{field}", "$lastCallAt"]}]}


def _if(condition: str, value: Any, otherwise: Any) -> dict:
    return {"$cond": [condition, {"$literal": value}, otherwise]}


def change_reason(before: str | None, after: str, ranks: StatusRanks) -> str:
    """Why a status change was made, for its activity."""
    if before is None:
        return "first status"
    if ranks.of(after) > ranks.of(before):
        return f"{after} ranks above {before}"
    return f"a newer call of the same rank as {before}"
