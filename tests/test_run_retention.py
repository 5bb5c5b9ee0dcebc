"""Run records and webhook deliveries expire after RUN_RETENTION_DAYS and WEBHOOK_INBOX_DAYS, and a
changed value takes effect at the next start; on mongomock here, on the server in
tests/test_server_indexes.py."""
from fakes.mongo_hooks import HookedClient, RoundTripCounter
from services.database import RUN_EXPIRY_INDEX, SYNC_RUNS, WEBHOOK_INBOX, account_view, ensure_indexes
from tests.conftest import TEST_DB


def expiry_days(db) -> tuple[float, float]:
    runs = db[SYNC_RUNS].index_information()[RUN_EXPIRY_INDEX]
    inbox = db[WEBHOOK_INBOX].index_information()["ttl_receivedAt"]
    return runs["expireAfterSeconds"] / 86400, inbox["expireAfterSeconds"] / 86400


def test_a_changed_retention_changes_the_ttl_index_in_place(mongo):
    operations = RoundTripCounter()
    db = account_view(HookedClient(mongo, operations)[TEST_DB], None)  # as the daemon, with one account
    ensure_indexes(db, run_retention_days=30, inbox_days=3)
    assert expiry_days(db) == (30, 3)

    ensure_indexes(db, run_retention_days=7, inbox_days=1)  # MongoDB refuses a re-create with other options
    assert expiry_days(db) == (7, 1)
    assert operations.by_method["drop_index"] == 0  # changed in place: never a moment without the index

    ensure_indexes(db, run_retention_days=7, inbox_days=1)
    assert expiry_days(db) == (7, 1)
    assert list(db[SYNC_RUNS].index_information()[RUN_EXPIRY_INDEX]["key"]) == [("startedAt", 1)]
