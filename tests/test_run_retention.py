"""Run records expire after RUN_RETENTION_DAYS, and a changed value takes effect at the next start."""
from services.database import RUN_EXPIRY_INDEX, SYNC_RUNS, ensure_indexes


def expiry_days(db) -> float:
    return db[SYNC_RUNS].index_information()[RUN_EXPIRY_INDEX]["expireAfterSeconds"] / 86400


def test_a_changed_retention_replaces_the_ttl_index(db):
    ensure_indexes(db, run_retention_days=30)
    assert expiry_days(db) == 30

    ensure_indexes(db, run_retention_days=7)  # MongoDB refuses a plain re-create with other options
    assert expiry_days(db) == 7

    ensure_indexes(db, run_retention_days=7)
    assert expiry_days(db) == 7
    assert list(db[SYNC_RUNS].index_information()[RUN_EXPIRY_INDEX]["key"]) == [("startedAt", 1)]
