"""Collection names and the indexes the daemon relies on."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.collection import Collection
from pymongo.database import Database

CUSTOMERS = "customers"
CUSTOMER_CALLS = "customer_calls"
CALLS = "calls"
CONTACTS = "contacts"
ACTIVITIES = "activities"
SYNC_STATE = "sync_state"
SYNC_RUNS = "sync_runs"

RUN_EXPIRY_INDEX = "ttl_startedAt"


# CRM records written by other programs may lack a phone; they must not stop the index build.
_HAS_PHONE = {"phone": {"$type": "string"}}


def ensure_indexes(db: Database, run_retention_days: int = 30) -> None:
    """Idempotent; run at start-up. Unique indexes are what make re-syncs updates, not duplicates."""
    db[CUSTOMERS].create_indexes([
        IndexModel([("phone", ASCENDING)], unique=True, name="phone_unique", partialFilterExpression=_HAS_PHONE),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
    ])
    # One link per call counted on a customer (`_id` = call id): crm_sync counts them per number.
    db[CUSTOMER_CALLS].create_indexes([IndexModel([("phone", ASCENDING)], name="phone")])
    db[CALLS].create_indexes([
        IndexModel([("callId", ASCENDING)], unique=True, name="callId_unique"),
        # The analyzer's queue: unprocessed terminal calls, oldest first.
        IndexModel([("processed", ASCENDING), ("terminal", ASCENDING), ("callAt", ASCENDING)],
                   name="analysis_queue"),
        IndexModel([("customerPhone", ASCENDING)], name="customerPhone"),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
    ])
    db[CONTACTS].create_indexes([
        IndexModel([("phone", ASCENDING)], unique=True, name="phone_unique", partialFilterExpression=_HAS_PHONE),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
    ])
    db[ACTIVITIES].create_indexes([
        # One entry per AI decision: a retaken attempt rewrites its decision's entry, a
        # reanalysis (a new round) adds one.
        IndexModel([("callId", ASCENDING), ("type", ASCENDING), ("round", ASCENDING)], unique=True,
                   name="decision_unique"),
        # A contact's timeline in the CRM: its activities, newest first.
        IndexModel([("contactId", ASCENDING), ("at", DESCENDING)], name="contactId_at"),
        IndexModel([("at", DESCENDING)], name="at"),
    ])
    db[SYNC_RUNS].create_indexes([
        IndexModel([("job", ASCENDING), ("startedAt", DESCENDING)], name="job_startedAt"),
    ])
    _ensure_run_expiry(db[SYNC_RUNS], run_retention_days * 86400)


def _ensure_run_expiry(runs: Collection, seconds: int) -> None:
    """Old run records expire through a TTL index. When RUN_RETENTION_DAYS changed, MongoDB
    refuses to re-create the index with another expiry (IndexOptionsConflict); `collMod` could
    change it in place, but mongomock (tests, demo) lacks it, so the old index is dropped first.
    Without the index for that moment, nothing expires early: it only delays expiry."""
    current = runs.index_information().get(RUN_EXPIRY_INDEX)
    if current is not None and current.get("expireAfterSeconds") != seconds:
        runs.drop_index(RUN_EXPIRY_INDEX)
    runs.create_index([("startedAt", ASCENDING)], name=RUN_EXPIRY_INDEX, expireAfterSeconds=seconds)
