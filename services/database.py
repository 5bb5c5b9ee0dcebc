"""Collection names and the indexes the daemon relies on."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.database import Database

from services import lease
from services.accounts.scoped import ACCOUNT_FIELD, AccountDatabase, AccountScopeError

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
INBOX_WAITING = "waiting"  # an entry's state until processed (services/webhooks.py); erasure scrubs these
WEBHOOK_DELIVERIES = "webhook_deliveries"
# Across accounts (ACCOUNT_SOURCE=mongodb).
ACCOUNT_SCHEDULE = "tenant_schedule"
LLM_QUOTA = "llm_quota"
# The code of a write refused by a unique index.
DUPLICATE_KEY = 11000

# Every collection the daemon writes holds one account's documents at a time (services/accounts).
ACCOUNT_COLLECTIONS = (CUSTOMERS, CUSTOMER_CALLS, CALLS, CONTACTS, ACTIVITIES, SYNC_STATE, SYNC_RUNS, LLM_BATCHES,
                      PIPELINES, STAGE_REVIEWS, SUPPRESSIONS, ERASURES, WEBHOOK_INBOX, WEBHOOK_DELIVERIES)

RUN_EXPIRY_INDEX = "ttl_startedAt"
JOB_STARTED_INDEX = "job_startedAt"
PHONE_INDEX = "phone_unique"

# Keys of the indexes some queries name as a hint (a hint by keys survives a renamed index): a
# simpler planner (the test run's wire server) gives up on an index when the filter has a field
# outside it, or on an `$or`, and would scan; MongoDB picks these anyway.
PHONE_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("phone", ASCENDING)]
CALL_ID_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("callId", ASCENDING)]
QUEUE_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("processed", ASCENDING), ("terminal", ASCENDING),
                    ("callAt", ASCENDING)]
CALL_AGE_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("callAt", ASCENDING)]
TRANSCRIPT_AGE_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("transcriptRemovedAt", ASCENDING), ("callAt", ASCENDING)]
RUN_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("job", ASCENDING), ("startedAt", DESCENDING)]
# An erasure's calls by number, filtered by `direction` (the agent's own line is never the person's).
FROM_NUMBER_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("fromNumber", ASCENDING)]
TO_NUMBER_INDEX_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("toNumber", ASCENDING)]
# Across accounts: a replica's one webhook processor claims the waiting deliveries of all of them
# (round-robin: services/webhooks.py).
INBOX_STATE_KEYS = [("state", ASCENDING), ("receivedAt", ASCENDING)]
INBOX_CLAIM_KEYS = [("state", ASCENDING), ("rank", ASCENDING), ("receivedAt", ASCENDING)]
SUPPRESSION_KEY_KEYS = [(ACCOUNT_FIELD, ASCENDING), ("keyId", ASCENDING)]
# The schedule's claim of the account due longest.
SCHEDULE_CLAIM_KEYS = [("active", ASCENDING), ("dueAt", ASCENDING)]
SCHEDULE_INDEXES = [IndexModel(SCHEDULE_CLAIM_KEYS, name="active_dueAt")]

# Every index of an account's data leads with `userId` (the view adds it to every query): a lookup
# reads the one account's entries, and two accounts may hold the same number or the same call id.
def _account_index(*keys: tuple[str, int], name: str, **options) -> IndexModel:
    return IndexModel([(ACCOUNT_FIELD, ASCENDING), *keys], name=name, **options)


# Unique and sparse, not partial: docs/collections.md, "Why `phone_unique` is sparse".
_PHONE = IndexModel(PHONE_INDEX_KEYS, unique=True, sparse=True, name=PHONE_INDEX)
_UPDATED = _account_index(("updatedAt", ASCENDING), name="updatedAt")

# Every index the daemon relies on, by collection; built (idempotently) at start-up. The queries
# each serves: docs/collections.md, "Indexes and the queries they serve".
_INDEXES: dict[str, list[IndexModel]] = {
    CUSTOMERS: [_PHONE, _UPDATED],
    CUSTOMER_CALLS: [_account_index(("phone", ASCENDING), name="phone")],
    CALLS: [
        IndexModel(CALL_ID_INDEX_KEYS, unique=True, name="callId_unique"),
        IndexModel(QUEUE_INDEX_KEYS, name="analysis_queue"),
        _account_index(("customerPhone", ASCENDING), name="customerPhone"),
        # The caller of a call without `call_type` (taken as outbound) is only in `fromNumber`; both
        # sides tell an agent's own line (services/privacy.py).
        IndexModel(FROM_NUMBER_INDEX_KEYS, name="fromNumber"),
        IndexModel(TO_NUMBER_INDEX_KEYS, name="toNumber"),
        _UPDATED,
        # The calls stripped carry `transcriptRemovedAt` and are out of the range of the calls still
        # holding a transcript, so a retention pass never walks the calls earlier passes stripped.
        IndexModel(CALL_AGE_INDEX_KEYS, name="callAt"),
        IndexModel(TRANSCRIPT_AGE_INDEX_KEYS, name="transcript_retention"),
    ],
    CONTACTS: [_PHONE, _UPDATED],
    ACTIVITIES: [
        # `record`: a call's customer and its contact each have their `held_back` entry (the
        # other types carry none). Once without it: `ensure_indexes` rebuilds a stored one.
        _account_index(("callId", ASCENDING), ("type", ASCENDING), ("round", ASCENDING), ("record", ASCENDING),
                       unique=True, name="decision_unique"),
        _account_index(("contactId", ASCENDING), ("at", DESCENDING), name="contactId_at"),
        _account_index(("at", DESCENDING), name="at"),
        # Sparse: AI decisions carry no `customerPhone`.
        _account_index(("customerPhone", ASCENDING), sparse=True, name="customerPhone"),
    ],
    SYNC_STATE: [
        _account_index(("job", ASCENDING), name="job"),
        _account_index(("pending.callId", ASCENDING), name="pending_callId"),
    ],
    SYNC_RUNS: [
        IndexModel(RUN_INDEX_KEYS, name=JOB_STARTED_INDEX),
        IndexModel([("status", ASCENDING), ("host", ASCENDING)], name="status_host"),  # whatever the account
    ],
    SUPPRESSIONS: [IndexModel(SUPPRESSION_KEY_KEYS, name="keyId")],
    STAGE_REVIEWS: [
        _account_index(("callId", ASCENDING), ("round", ASCENDING), unique=True, name="decision_unique"),
        _account_index(("status", ASCENDING), ("createdAt", ASCENDING), name="status_createdAt"),
        _account_index(("customerPhone", ASCENDING), name="customerPhone", sparse=True),
    ],
    LLM_BATCHES: [_account_index(("status", ASCENDING), name="status")],
    WEBHOOK_INBOX: [
        # Bolna sends each status of a call once, and again when unsure: the second is a duplicate.
        _account_index(("callId", ASCENDING), ("status", ASCENDING), unique=True, name="delivery_unique"),
        IndexModel(INBOX_STATE_KEYS, name="state_receivedAt"),
        IndexModel(INBOX_CLAIM_KEYS, name="state_rank_receivedAt"),
        _account_index(("state", ASCENDING), name="userId_state"),
    ],
    # Beside the TTL index, which cannot be compound.
    WEBHOOK_DELIVERIES: [_account_index(("at", ASCENDING), name="userId_at")],
    ACCOUNT_SCHEDULE: SCHEDULE_INDEXES,
}


def account_view(db: Database, account_id) -> AccountDatabase:
    """The database as the account `account_id` sees it (None: the single account of the environment)."""
    if isinstance(db, AccountDatabase):
        if db.account_id != account_id:
            raise AccountScopeError("one account's view of the database cannot be another's")
        return db
    return AccountDatabase(db, account_id, ACCOUNT_COLLECTIONS)


_REBUILT_OPTIONS = ("unique", "sparse", "partialFilterExpression")


def ensure_indexes(db: Database, run_retention_days: int = 30, inbox_days: int = 3) -> None:
    """Idempotent; run at start-up. Unique indexes are what make re-syncs updates, not duplicates.
    Through an account's view (single-account mode), the accounts' collections only: the shared
    ones (the schedule, the LLM quota) serve many accounts, and the view does not reach them."""
    shared = not isinstance(db, AccountDatabase)
    # Old documents expire through TTL indexes (these cannot be compound: by age, whatever the account).
    expiring = {SYNC_RUNS: ("startedAt", RUN_EXPIRY_INDEX, run_retention_days * 86400),
                WEBHOOK_INBOX: ("receivedAt", "ttl_receivedAt", inbox_days * 86400),
                WEBHOOK_DELIVERIES: ("at", "ttl_at", 30 * 86400),  # hourly delivery counts, kept 30 days
                LLM_QUOTA: ("at", "ttl_at", 86400)}  # a window's counter is of no use a day on
    indexes = {collection: list(models) for collection, models in _INDEXES.items()}
    for collection, (field, name, seconds) in expiring.items():
        indexes.setdefault(collection, []).append(
            IndexModel([(field, ASCENDING)], name=name, expireAfterSeconds=seconds))
    for collection, models in indexes.items():
        if shared or collection in ACCOUNT_COLLECTIONS:
            # An index of ours that an earlier version built differently: another retention is
            # changed in place (`collMod`: no rebuild, never a moment without the index). Other keys
            # or options (before accounts, without `userId`; a partial `phone_unique`) are dropped
            # first: MongoDB refuses to build one of the same name differently. Until the new one is
            # built (at once: what it keeps unique was unique before), uniqueness rests on the
            # daemon's own upserts. Indexes of other names (a CRM front end's) are left alone.
            current = db[collection].index_information()
            for wanted in (model.document for model in models):
                existing = current.get(wanted["name"])
                if existing is None:
                    continue
                if list(existing["key"]) != list(wanted["key"].items()) or any(
                        existing.get(option) != wanted.get(option) for option in _REBUILT_OPTIONS):
                    db[collection].drop_index(wanted["name"])
                elif existing.get("expireAfterSeconds") != wanted.get("expireAfterSeconds"):
                    db.command({"collMod": collection, "index": {
                        "name": wanted["name"], "expireAfterSeconds": wanted["expireAfterSeconds"]}})
            db[collection].create_indexes(models)
    # Leases an earlier version wrote in its own names (services/lease.py), where they can be.
    lease.migrate(db[CALLS], "claim", "expiresAt", {"processed": False, "terminal": True}, QUEUE_INDEX_KEYS)
    lease.migrate(db[WEBHOOK_INBOX], "claim", "expiresAt", {"state": "waiting"}, INBOX_STATE_KEYS)
    if shared:
        lease.migrate(db[ACCOUNT_SCHEDULE], "lease", "until", {})
