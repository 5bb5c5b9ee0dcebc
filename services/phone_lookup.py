"""Finding the record of a number under any spelling it was stored with before normalization
existed, so such a record is updated rather than duplicated."""
from __future__ import annotations

from pymongo.collection import Collection

from utils.phone import Phone, lookup_keys


def records_by_phone(collection: Collection, phones: list[Phone], projection: dict | None = None
                     ) -> dict[str, list[dict]]:
    """The stored records of each number, by its key, in one query; empty lists are left out.
    The first of each list is the one to keep: the record already keyed by the normalized number,
    else the oldest by `_id` (every process picks the same)."""
    keys = {phone.key: lookup_keys(phone) for phone in phones}
    owner = {spelling: key for key, variants in keys.items() for spelling in variants}
    if not owner:
        return {}
    found: dict[str, list[dict]] = {}
    for doc in collection.find({"phone": {"$in": list(owner)}}, projection):
        found.setdefault(owner[doc["phone"]], []).append(doc)
    for key, docs in found.items():
        docs.sort(key=lambda doc: (doc["phone"] != key, str(doc["_id"])))
    return found


def ids_by_phone(collection: Collection, phones: list[Phone]) -> dict[str, object]:
    """`_id` of the record to keep for each number, by its key."""
    return {key: docs[0]["_id"] for key, docs in records_by_phone(collection, phones, {"phone": 1}).items()}
