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
LLM_BATCHES = "llm_batches"
PIPELINES = "pipelines"
STAGE_REVIEWS = "stage_reviews"
SUPPRESSIONS = "suppressions"
ERASURES = "erasures"
WEBHOOK_INBOX = "webhook_inbox"
WEBHOOK_DELIVERIES = "webhook_deliveries"

RUN_EXPIRY_INDEX = "ttl_startedAt"
JOB_STARTED_INDEX = "job_startedAt"
PHONE_INDEX = "phone_unique"
INBOX_EXPIRY_INDEX = "ttl_receivedAt"
DELIVERIES_EXPIRY_INDEX = "ttl_at"
DELIVERY_COUNTS_DAYS = 30

# Unique and sparse, not partial: MongoDB uses a partial index only for a query it can prove is
# inside the filter, and `{phone: "+91…"}` does not prove `$type: "string"`, so every lookup by
# phone was a collection scan. A sparse index serves any equality or $in on a non-null phone,
# and a CRM record written by another program without a phone is left out of it, so any number
# of those never collide. The daemon writes every phone as a string: E.164, or the raw text of
# an invalid number (a call without any number writes no customer), so its own writes never
# store a null phone (a null is indexed, and a second one would collide).
_PHONE = IndexModel([("phone", ASCENDING)], unique=True, sparse=True, name=PHONE_INDEX)


# Every index the daemon relies on, by collection; built (idempotently) at start-up.
_INDEXES: dict[str, list[IndexModel]] = {
    CUSTOMERS: [_PHONE, IndexModel([("updatedAt", ASCENDING)], name="updatedAt")],
    # One link per call counted on a customer (`_id` = call id): crm_sync counts them per number.
    CUSTOMER_CALLS: [IndexModel([("phone", ASCENDING)], name="phone")],
    CALLS: [
        IndexModel([("callId", ASCENDING)], unique=True, name="callId_unique"),
        # The analyzer's queue: unprocessed terminal calls, oldest first.
        IndexModel([("processed", ASCENDING), ("terminal", ASCENDING), ("callAt", ASCENDING)],
                   name="analysis_queue"),
        IndexModel([("customerPhone", ASCENDING)], name="customerPhone"),
        IndexModel([("updatedAt", ASCENDING)], name="updatedAt"),
        # Retention (services/privacy/retention.py): whole calls by age, and the calls still
        # holding a transcript by age (those stripped carry `transcriptRemovedAt` and are out of
        # the range, so a pass never walks the calls earlier passes stripped).
        IndexModel([("callAt", ASCENDING)], name="callAt"),
        IndexModel([("transcriptRemovedAt", ASCENDING), ("callAt", ASCENDING)], name="transcript_retention"),
    ],
    CONTACTS: [_PHONE, IndexModel([("updatedAt", ASCENDING)], name="updatedAt")],
    ACTIVITIES: [
        # One entry per AI decision: a retaken attempt rewrites its decision's entry, a
        # reanalysis (a new round) adds one.
        IndexModel([("callId", ASCENDING), ("type", ASCENDING), ("round", ASCENDING)], unique=True,
                   name="decision_unique"),
        # A contact's timeline in the CRM: its activities, newest first.
        IndexModel([("contactId", ASCENDING), ("at", DESCENDING)], name="contactId_at"),
        IndexModel([("at", DESCENDING)], name="at"),
        # A customer's status changes: what an erasure removes, and a CRM's status history.
        # Sparse: AI decisions carry no `customerPhone`.
        IndexModel([("customerPhone", ASCENDING)], sparse=True, name="customerPhone"),
    ],
    SYNC_STATE: [
        # Each run reads its job's cursors (`{job}`).
        IndexModel([("job", ASCENDING)], name="job"),
        # An erasure: which cursors still follow the erased number's calls by id.
        IndexModel([("pending.callId", ASCENDING)], name="pending_callId"),
    ],
    SYNC_RUNS: [
        IndexModel([("job", ASCENDING), ("startedAt", DESCENDING)], name=JOB_STARTED_INDEX),
        # At start-up: which runs are still `running` on this host.
        IndexModel([("status", ASCENDING), ("host", ASCENDING)], name="status_host"),
    ],
    # Start-up: hashes written with another key than the configured one (services/privacy).
    SUPPRESSIONS: [IndexModel([("keyId", ASCENDING)], name="keyId")],
    # Stage suggestions a person reviews: the open ones, oldest first (`main.py review`).
    STAGE_REVIEWS: [
        IndexModel([("callId", ASCENDING), ("round", ASCENDING)], unique=True, name="decision_unique"),
        IndexModel([("status", ASCENDING), ("createdAt", ASCENDING)], name="status_createdAt"),
        IndexModel([("customerPhone", ASCENDING)], name="customerPhone", sparse=True),
    ],
    # Groq Batch API jobs still open, polled each run.
    LLM_BATCHES: [IndexModel([("status", ASCENDING)], name="status")],
    WEBHOOK_INBOX: [
        # Bolna sends each status of a call once, and again when unsure: the second is a duplicate.
        IndexModel([("callId", ASCENDING), ("status", ASCENDING)], unique=True, name="delivery_unique"),
        # The processor's claims: waiting deliveries, oldest first.
        IndexModel([("state", ASCENDING), ("receivedAt", ASCENDING)], name="state_receivedAt"),
    ],
}


def ensure_indexes(db: Database, run_retention_days: int = 30, inbox_days: int = 3) -> None:
    """Idempotent; run at start-up. Unique indexes are what make re-syncs updates, not duplicates."""
    _replace_partial_phone_index(db[CUSTOMERS])
    _replace_partial_phone_index(db[CONTACTS])
    for collection, indexes in _INDEXES.items():
        db[collection].create_indexes(indexes)
    _ensure_run_expiry(db[SYNC_RUNS], run_retention_days * 86400)
    _ensure_expiry(db[WEBHOOK_INBOX], INBOX_EXPIRY_INDEX, "receivedAt", inbox_days * 86400)
    _ensure_expiry(db[WEBHOOK_DELIVERIES], DELIVERIES_EXPIRY_INDEX, "at", DELIVERY_COUNTS_DAYS * 86400)


def _replace_partial_phone_index(collection: Collection) -> None:
    """Databases indexed by earlier versions have a partial `phone_unique`, and MongoDB refuses
    to create an index of that name with other options, so it is dropped first. Until the new
    one is built (at once: the existing phones are unique already), uniqueness rests on the
    daemon's own upserts by phone."""
    current = collection.index_information().get(PHONE_INDEX)
    if current is not None and "partialFilterExpression" in current:
        collection.drop_index(PHONE_INDEX)


def _ensure_run_expiry(runs: Collection, seconds: int) -> None:
    _ensure_expiry(runs, RUN_EXPIRY_INDEX, "startedAt", seconds)


def _ensure_expiry(collection: Collection, name: str, field: str, seconds: int) -> None:
    """Old documents expire through a TTL index. When the retention changed, MongoDB refuses to
    re-create the index with another expiry (IndexOptionsConflict); `collMod` could change it in
    place, but mongomock (tests, demo) lacks it, so the old index is dropped first. Without the
    index for that moment, nothing expires early: it only delays expiry."""
    current = collection.index_information().get(name)
    if current is not None and current.get("expireAfterSeconds") != seconds:
        collection.drop_index(name)
    collection.create_index([(field, ASCENDING)], name=name, expireAfterSeconds=seconds)
