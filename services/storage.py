"""Collection names and the indexes the daemon relies on."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

CUSTOMERS = "customers"
CALLS = "calls"
CONTACTS = "contacts"
ACTIVITIES = "activities"
SYNC_STATE = "sync_state"
SYNC_RUNS = "sync_runs"


def ensure_indexes(db: Database, run_retention_days: int = 30) -> None:
    """Idempotent; run at start-up. Unique indexes are what make re-syncs updates, not duplicates."""
    db[CUSTOMERS].create_indexes([
        IndexModel([("phone", ASCENDING)], unique=True, name="phone_unique"),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
    ])
    db[CALLS].create_indexes([
        IndexModel([("callId", ASCENDING)], unique=True, name="callId_unique"),
        # The analyzer's queue: unprocessed terminal calls, oldest first.
        IndexModel([("processed", ASCENDING), ("terminal", ASCENDING), ("callAt", ASCENDING)],
                   name="analysis_queue"),
        IndexModel([("customerPhone", ASCENDING)], name="customerPhone"),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
    ])
    db[CONTACTS].create_indexes([
        IndexModel([("phone", ASCENDING)], unique=True, name="phone_unique"),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
    ])
    db[ACTIVITIES].create_indexes([
        IndexModel([("callId", ASCENDING)], name="callId"),
        IndexModel([("at", DESCENDING)], name="at"),
    ])
    db[SYNC_RUNS].create_indexes([
        IndexModel([("job", ASCENDING), ("startedAt", DESCENDING)], name="job_startedAt"),
        IndexModel([("startedAt", ASCENDING)], name="ttl_startedAt",
                   expireAfterSeconds=run_retention_days * 86400),
    ])
