"""The analyzer's tests again on a real server (tests.real_mongo): claims must be atomic through
the server's find_one_and_update, not through mongomock behind a lock."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_analyzer_batch import *  # noqa: F401,F403 - collected again, on the server
