"""Batched writes that survive a lost race with another daemon."""
from __future__ import annotations

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000


def bulk_upsert(collection: Collection, operations: list[UpdateOne]) -> tuple[int, int]:
    """Run upserts in one round trip; returns (inserted, updated).

    Two daemons upserting the same new key at once make one of them hit the unique index;
    the document exists by then, so running those operations again turns them into updates."""
    if not operations:
        return 0, 0
    try:
        result = collection.bulk_write(operations, ordered=False)
        return result.upserted_count, result.modified_count
    except BulkWriteError as exc:
        details = exc.details
        errors = details.get("writeErrors", [])
        if any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
        retry = [operations[error["index"]] for error in errors]
        inserted = collection.bulk_write(retry, ordered=False).upserted_count
        return details.get("nUpserted", 0) + inserted, details.get("nModified", 0) + len(retry) - inserted
