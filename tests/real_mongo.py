"""For the modules that run tests again against a real MongoDB: their `mongo` fixture replaces
conftest's mongomock client there with a client of the server at `mongodb_uri` (MONGODB_URI, or
the wire server the test run starts). The test database starts empty and is dropped afterwards."""
import pytest
from pymongo import MongoClient

from tests.conftest import TEST_DB


@pytest.fixture
def mongo(mongodb_uri):
    client = MongoClient(mongodb_uri, tz_aware=False, serverSelectionTimeoutMS=5000)
    client.drop_database(TEST_DB)
    yield client
    client.drop_database(TEST_DB)
    client.close()
