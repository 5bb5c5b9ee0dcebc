"""The `customers` document, built from the calls of one phone number.

A customer update is an aggregation-pipeline update so that it is atomic and idempotent on
the server: call ids are a set (so `callCount` cannot double count on a re-sync or when two
daemons race), and profile fields follow the newest call even when pages arrive newest first.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import UpdateOne

from models.execution import Execution
from utils.phone import Phone

# Customer field -> extraction names that mean it (agents' extraction prompts vary).
PROFILE_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name", "customer_name", "user_name", "full_name", "caller_name"),
    "email": ("email", "email_address", "user_email"),
    "interest": ("interest", "interested_in", "product", "product_interest", "requirement"),
    "notes": ("notes", "note", "remarks", "comments"),
    "address": ("address", "location", "city"),
}
_BOOKED_KEYS = ("appointment_booked", "booked", "is_booked", "booking_confirmed")
_CALLBACK_KEYS = ("callback_user", "callback_requested", "call_back")
_INTEREST_KEYS = ("user_interested", "interested", "is_interested")
_KNOWN_KEYS = frozenset(k for keys in PROFILE_FIELDS.values() for k in keys).union(
    _BOOKED_KEYS, _CALLBACK_KEYS, _INTEREST_KEYS)

NO_ANSWER = "No Answer"
_EPOCH = datetime(1970, 1, 1)


@dataclass
class CustomerCall:
    """What one call says about its customer."""
    call_id: str
    at: datetime
    agent_id: str | None
    status: str
    profile: dict[str, Any]
    extracted: dict[str, Any]


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


def _first_flag(extracted: dict[str, Any], keys: tuple[str, ...]) -> bool | None:
    for key in keys:
        flag = _truthy(extracted.get(key))
        if flag is not None:
            return flag
    return None


def customer_status(execution: Execution, extracted: dict[str, Any]) -> str:
    """The customer's status after this call, from its outcome and what was extracted."""
    if not execution.connected:
        return NO_ANSWER
    if _first_flag(extracted, _BOOKED_KEYS) or str(extracted.get("appointment_status", "")).lower() == "booked":
        return "Booked"
    if _first_flag(extracted, _CALLBACK_KEYS):
        return "Callback"
    interested = _first_flag(extracted, _INTEREST_KEYS)
    if interested is not None:
        return "Interested" if interested else "Not Interested"
    return "Contacted"


def customer_call(execution: Execution) -> CustomerCall:
    extracted = execution.extracted or {}
    profile = {}
    for field_name, keys in PROFILE_FIELDS.items():
        for key in keys:
            value = extracted.get(key)
            if value not in (None, "", [], {}):
                profile[field_name] = value
                break
    unknown = {k: v for k, v in extracted.items() if k not in _KNOWN_KEYS}
    return CustomerCall(execution.id, execution.created_at, execution.agent_id,
                        customer_status(execution, extracted), profile, unknown)


def customer_upsert(phone: Phone, calls: list[CustomerCall], now: datetime,
                    existing_id: object = None) -> UpdateOne:
    """One upsert for all of a page's calls from one number: onto `existing_id` (the record found
    under any spelling of the number) or a record keyed by the normalized number. The stored
    `phone` becomes the normalized key."""
    newest = max(calls, key=lambda c: (c.at, c.call_id))
    # Within the page, older calls fill profile gaps the newest call left empty.
    profile: dict[str, Any] = {}
    for call in sorted(calls, key=lambda c: (c.at, c.call_id)):
        profile.update(call.profile)
    is_newer = "$_isNewer"

    def newest_wins(field: str, value: Any) -> dict:
        return {"$cond": [is_newer, {"$literal": value}, f"${field}"]}

    def fill(field: str, value: Any) -> dict:
        # A newer call overrides; an older one only fills what is missing.
        return {"$cond": [is_newer,
                          {"$ifNull": [{"$literal": value}, f"${field}"]},
                          {"$ifNull": [f"${field}", {"$literal": value}]}]}

    status, status_at = _status_expressions(calls)
    stage: dict[str, Any] = {
        "phone": {"$literal": phone.key},
        "phoneValid": phone.valid,
        "phoneRaw": newest_wins("phoneRaw", phone.raw),
        "callIds": {"$setUnion": [{"$ifNull": ["$callIds", []]}, {"$literal": [c.call_id for c in calls]}]},
        "lastCallAt": newest_wins("lastCallAt", newest.at),
        "lastCallId": newest_wins("lastCallId", newest.call_id),
        "agentId": newest_wins("agentId", newest.agent_id),
        "status": status,
        "statusAt": status_at,
        "createdAt": {"$ifNull": ["$createdAt", now]},
        "updatedAt": now,
    }
    for field_name, value in profile.items():
        stage[field_name] = fill(field_name, value)
    if newest.extracted:
        stage["extracted"] = newest_wins("extracted", newest.extracted)
    return UpdateOne(
        {"_id": existing_id} if existing_id is not None else {"phone": phone.key},
        [
            {"$set": {"_isNewer": {"$gt": [newest.at, {"$ifNull": ["$lastCallAt", _EPOCH]}]}}},
            {"$set": stage},
            {"$set": {"callCount": {"$size": "$callIds"}}},
            # `$project` exclusion, not the `$unset` stage: same effect, and mongomock knows it.
            {"$project": {"_isNewer": 0}},
        ],
        upsert=True,
    )


def _status_expressions(calls: list[CustomerCall]) -> tuple[dict, dict]:
    """`status` follows the newest call that says something about intent; a missed call
    ("No Answer") only fills a status that is missing, and is overridden by any answered call,
    older or newer. `statusAt` is the time of the call the status came from."""
    answered = [c for c in calls if c.status != NO_ANSWER]
    if not answered:
        return ({"$ifNull": ["$status", NO_ANSWER]},
                {"$ifNull": ["$statusAt", {"$literal": max(c.at for c in calls)}]})
    source = max(answered, key=lambda c: (c.at, c.call_id))
    overrides = {"$or": [{"$eq": [{"$ifNull": ["$status", NO_ANSWER]}, NO_ANSWER]},
                         {"$gt": [source.at, {"$ifNull": ["$statusAt", _EPOCH]}]}]}
    return ({"$cond": [overrides, {"$literal": source.status}, "$status"]},
            {"$cond": [overrides, source.at, "$statusAt"]})
