"""Legacy customers: records written before every spelling of a number meant one customer.

Two spellings of one number (`09876543210` and `+919876543210`) stored as two records are merged
into one by the same rules as any update (the newest value of each field, the highest-ranked
status), and the others removed. A record's `callIds` array (the old way of counting) becomes one
link per call in `customer_calls`, so the count stays exact and the array stops growing."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from pymongo import ReturnDocument, UpdateOne
from pymongo.collection import Collection

from models.customer import EPOCH, PROFILE_FIELDS, StatusRanks, merge_update


def legacy_call_ids(doc: dict) -> list[str]:
    """The call ids of a record's `callIds`: an array, or in some old records a single id."""
    call_ids = doc.get("callIds")
    if isinstance(call_ids, str):
        return [call_ids]
    return [call_id for call_id in call_ids if isinstance(call_id, str)] if isinstance(call_ids, list) else []


def legacy_links(key: str, docs: list[dict], link_id: Callable[[str], str]) -> list[UpdateOne]:
    """Links for the calls the records count in a `callIds` array, not applied yet: a link is
    applied only once its customer is stored under `key` (`LEGACY_LINK`). Applied at once, a
    crash before that left the calls skipped by every later run, and the merged record under its
    old spelling for good (issue 23)."""
    call_ids = {call_id for doc in docs for call_id in legacy_call_ids(doc)}
    return [UpdateOne({"_id": link_id(call_id)}, {"$setOnInsert": {"callId": call_id, "phone": key, "applied": False}},
                      upsert=True)
            for call_id in sorted(call_ids)]


# A link made from a `callIds` array whose call no page has brought yet (a page's link has its
# call's `at`), not applied: the writer applies it once its number's customer is written under
# the number's key. Told from the links themselves, so a run after a crash applies it even when
# the `callIds` it came from were already merged away. As a query, and as an expression.
LEGACY_LINK = {"applied": False, "at": {"$exists": False}}
LEGACY_LINK_EXPRESSION = {"$and": [{"$eq": ["$applied", False]}, {"$eq": [{"$ifNull": ["$at", None]}, None]}]}


def linked_call_id(link: dict) -> str:
    """A link's call: its `_id` is the call id made unique across accounts (services/tenancy), and
    links written before accounts existed carry no `callId` (their `_id` is the call id)."""
    return link.get("callId", link["_id"])


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
