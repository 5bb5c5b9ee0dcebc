import mongomock
import pytest
from hypothesis import settings as hypothesis_settings

from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedClient
from services.database import ensure_indexes
from utils.config import Settings


TEST_DB = "callsync_test"

# Property tests check behaviour, not speed (that is for benchmarks): no per-example deadline,
# which a loaded CI machine would otherwise turn into random failures.
hypothesis_settings.register_profile("callsync", deadline=None)
hypothesis_settings.load_profile("callsync")


@pytest.fixture
def mongo():
    return mongomock.MongoClient()


@pytest.fixture
def db(mongo):
    """The test database, indexed as the daemon indexes it; each operation runs whole, as on a
    server (fakes.mongo_hooks), since the code under test shares it across threads."""
    database = HookedClient(mongo)[TEST_DB]
    ensure_indexes(database)
    return database


@pytest.fixture
def settings():
    """Settings for tests: fast retries, offline analyzer, no environment read."""
    return Settings(mongodb_db=TEST_DB, bolna_api_key="test-key", http_backoff_seconds=0.01,
                    http_max_attempts=3, http_timeout_seconds=5, backfill_days=8)


@pytest.fixture
def bolna_server(settings):
    """bolna_server(executions, agents) -> a started FakeBolna, stopped after the test."""
    servers = []

    def start(executions, agents, **options) -> FakeBolna:
        server = FakeBolna(list(agents), executions, api_key=settings.bolna_api_key, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
