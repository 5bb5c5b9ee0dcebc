import logging
import os

import mongomock
import pytest
from hypothesis import settings as hypothesis_settings

from fakes.bolna_api import RateLimits
from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedClient
from services.database import ensure_indexes, account_view
from tests.wire_server import WireServer, ensure_installed
from utils.config import Settings


TEST_DB = "callsync_test"
# Bolna's limits raised a hundredfold, in the fake and in the client alike, for the tests that are
# not about pacing: some restart a sync hundreds of times against one fake within a minute.
# tests/test_backfill_pacing.py runs under the documented limits.
RAISED_LIMITS = {"listing": 50_000, "other": 100_000}

# Property tests check behaviour, not speed (that is for benchmarks): no per-example deadline,
# which a loaded CI machine would otherwise turn into random failures.
# Derandomized: the normal run (CI's) tries the same examples every time, so a red run is the
# change's doing and reproduces; the long profile searches afresh each time.
hypothesis_settings.register_profile("callsync", deadline=None, derandomize=True)
# CALLSYNC_HYPOTHESIS_PROFILE=long: many more examples for the property tests that take theirs
# from the profile (those that set their own `max_examples` keep it).
hypothesis_settings.register_profile("long", parent=hypothesis_settings.get_profile("callsync"), max_examples=5000,
                                     derandomize=False)
hypothesis_settings.load_profile(os.environ.get("CALLSYNC_HYPOTHESIS_PROFILE", "callsync"))


def _configured_server() -> str:
    return os.environ.get("MONGODB_URI", "").strip()


def pytest_collection_finish(session):
    """Install the wire server's venv (first run only) before any test starts, so the install
    does not count against the first server test's timeout; only when a collected test needs it."""
    if not _configured_server() and any("mongodb_uri" in getattr(item, "fixturenames", ())
                                        for item in session.items):
        ensure_installed()


@pytest.fixture(scope="session")
def mongodb_uri():
    """The real server of the tests in `tests.real_mongo` modules: the one at MONGODB_URI when it
    is set (a mongod, Atlas), else a wire server (tests.wire_server) started for this run."""
    if _configured_server():
        yield _configured_server()
        return
    with WireServer() as server:
        yield server.uri


@pytest.fixture(autouse=True)
def root_logger_restored():
    """A test that sets logging up as the CLI does (`setup_logging`, also through `cli.main`) leaves
    the root logger writing to that test's captured stdout, closed when the test ends: every line a
    later test logged was a "Logging error". The root's handlers and level are put back after each."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def mongo():
    return mongomock.MongoClient()


@pytest.fixture
def whole_db(mongo):
    """The database itself, indexed, as the code that serves every account sees it (the accounts
    list, the account schedule, the LLM quota: collections no account's view reaches)."""
    database = HookedClient(mongo)[TEST_DB]
    ensure_indexes(database)
    return database


@pytest.fixture
def db(mongo):
    """The test database, indexed as the daemon indexes it; each operation runs whole, as on a
    server (fakes.mongo_hooks), since the code under test shares it across threads."""
    database = HookedClient(mongo)[TEST_DB]
    ensure_indexes(database)
    database = account_view(database, None)
    return database


@pytest.fixture
def settings():
    """Settings for tests: fast retries, offline analyzer, no environment read."""
    return Settings(mongodb_db=TEST_DB, bolna_api_key="test-key", http_backoff_seconds=0.01,
                    http_max_attempts=3, http_timeout_seconds=5, backfill_days=8,
                    bolna_listing_rate_per_minute=RAISED_LIMITS["listing"],
                    bolna_rate_per_minute=RAISED_LIMITS["other"])


@pytest.fixture
def bolna_server(settings):
    """bolna_server(executions, agents) -> a started FakeBolna, stopped after the test."""
    servers = []

    def start(executions, agents, **options) -> FakeBolna:
        options.setdefault("rate_limits", RateLimits(**RAISED_LIMITS))
        server = FakeBolna(list(agents), executions, api_key=settings.bolna_api_key, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
