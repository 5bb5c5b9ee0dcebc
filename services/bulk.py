"""Batched writes that survive a lost race with another daemon."""
from __future__ import annotations

from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

DUPLICATE_KEY = 11000


def bulk_upsert(collection: Collection, operations: list[UpdateOne | InsertOne], *, conditional: bool = False,
                retry_as: list[UpdateOne] | None = None) -> tuple[int, int]:
    """Run upserts in one round trip; returns (inserted, updated).

    Two daemons upserting the same new key at once make one of them hit the unique index;
    the document exists by then, so running those operations again turns them into updates.
    `conditional`: the filters also hold a condition on the stored document (models/call.py's
    order); one whose key is taken again on the retry found the document not meeting it, and is
    left as it is. `retry_as`: what to run again in place of each operation (an `InsertOne` of a
    document new when read: its upsert)."""
    if not operations:
        return 0, 0
    try:
        result = collection.bulk_write(operations, ordered=False)
        return result.upserted_count + result.inserted_count, result.modified_count
    except BulkWriteError as exc:
        details = _duplicates_only(exc, True)
        retry = [(retry_as or operations)[error["index"]] for error in details.get("writeErrors", [])]
        try:
            again = collection.bulk_write(retry, ordered=False).bulk_api_result
        except BulkWriteError as exc_again:
            again = _duplicates_only(exc_again, conditional)
        inserted = details.get("nUpserted", 0) + details.get("nInserted", 0) + again["nUpserted"]
        return inserted, details.get("nModified", 0) + again["nMatched"]


def _duplicates_only(error: BulkWriteError, allowed: bool) -> dict:
    """The details of a bulk write whose failures are all duplicate keys, when those are allowed;
    else the error again."""
    if not allowed or any(e.get("code") != DUPLICATE_KEY for e in error.details.get("writeErrors", [])):
        raise error
    return error.details
