"""Finding the record of a number under any spelling it was stored with before normalization
existed, so such a record is updated rather than duplicated."""
from __future__ import annotations

from pymongo.collection import Collection

from utils.phone import Phone, lookup_keys


def ids_by_phone(collection: Collection, phones: list[Phone]) -> dict[str, object]:
    """`_id` of the stored record of each number, by its key, in one query. Where several spellings
    of one number are stored, the record already keyed by the normalized number wins."""
    keys = {phone.key: lookup_keys(phone) for phone in phones}
    spellings = [spelling for variants in keys.values() for spelling in variants]
    if not spellings:
        return {}
    stored = {doc["phone"]: doc["_id"] for doc in collection.find({"phone": {"$in": spellings}}, {"phone": 1})}
    return {key: next(stored[s] for s in variants if s in stored)
            for key, variants in keys.items() if any(s in stored for s in variants)}
