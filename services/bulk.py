"""Batched writes that survive a lost race with another daemon."""
from __future__ import annotations

from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000


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
