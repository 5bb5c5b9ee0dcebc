"""The Batch API lane's tests again on a real server (tests.real_mongo): bulk claims must hold
through the server's update_many, not through mongomock behind a lock."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_batch_api import *  # noqa: F401,F403 - collected again, on the server
