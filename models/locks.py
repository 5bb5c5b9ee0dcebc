"""A person's edit wins: the CRM front end lists, in a document's `locked` array, the fields a
person set (`status`, `name`, `tag`, `stage`, `extra.budget`, …: the stored field's name; a
parent such as `extra` locks all its fields), in the same update that sets them. The daemon never
writes a locked field; what it would have written goes to `suggested.<field>`."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

LOCKED = "locked"
SUGGESTED = "suggested"
HELD_BACK = "held_back"  # the activity recording what a lock kept out
# The record a lock held a call's values on. A call's customer (the CRM sync) and its contact (the
# analysis) are each audited in an entry of their own: under one key, one writer overwrote the other.
HELD_ON_CUSTOMER, HELD_ON_CONTACT = "customer", "contact"


def held_back_key(call_id: str, round: int, record: str) -> dict:
    """The key of a call's `held_back` activity: one per round and record held."""
    return {"callId": call_id, "type": HELD_BACK, "round": round, "record": record}


def _prefixes(field: str) -> list[str]:
    parts = field.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def split_locked(changes: dict[str, Any], locked: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what may be written, what a lock holds back)."""
    held = set(locked or ())
    allowed = {field: value for field, value in changes.items()
               if not any(prefix in held for prefix in _prefixes(field))}
    return allowed, {field: value for field, value in changes.items() if field not in allowed}


def unlocked_guard(fields: Iterable[str]) -> dict:
    """A filter clause true only while none of `fields` (nor a parent) is locked: the write and
    the lock check are one atomic operation on the server, so a lock set meanwhile is never
    overwritten."""
    names = sorted({prefix for field in fields for prefix in _prefixes(field)})
    return {LOCKED: {"$nin": names}} if names else {}


def suggestions(held: dict[str, Any], call_id: str, at: datetime) -> dict[str, Any]:
    """`$set` entries keeping what a lock held back, with the call it came from."""
    return {f"{SUGGESTED}.{field}": {"value": value, "callId": call_id, "at": at} for field, value in held.items()}
