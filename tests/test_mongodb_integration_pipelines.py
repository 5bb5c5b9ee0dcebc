"""The pipeline and lock tests again on a real server (tests.real_mongo): the lock guard must hold
through the server's conditional update, not through mongomock behind a lock."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_pipelines import *  # noqa: F401,F403 - collected again, on the server
