"""For the modules that run tests again against a real MongoDB at MONGODB_URI: importing this
skips the module when no server is configured, and its `mongo` fixture replaces conftest's
mongomock client there (the test database starts empty and is dropped afterwards)."""
import os

import pytest
from pymongo import MongoClient

from tests.conftest import TEST_DB

MONGODB_URI = os.environ.get("MONGODB_URI", "").strip()
if not MONGODB_URI:
    pytest.skip("MONGODB_URI is not set: the real-MongoDB integration tests need a server "
                "(e.g. MONGODB_URI=mongodb://localhost:27017)", allow_module_level=True)


@pytest.fixture
def mongo():
    client = MongoClient(MONGODB_URI, tz_aware=False, serverSelectionTimeoutMS=5000)
    client.drop_database(TEST_DB)
    yield client
    client.drop_database(TEST_DB)
    client.close()
