import mongomock
import pytest

from utils.config import Settings


@pytest.fixture
def mongo():
    return mongomock.MongoClient()


@pytest.fixture
def db(mongo):
    return mongo["callsync_test"]


@pytest.fixture
def settings():
    """Settings for tests: fast retries, offline analyzer, no environment read."""
    return Settings(mongodb_db="callsync_test", bolna_api_key="test-key", http_backoff_seconds=0.01,
                    http_max_attempts=3, http_timeout_seconds=5, backfill_days=8)
