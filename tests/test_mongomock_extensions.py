"""What fakes/mongomock_extensions.py teaches mongomock, answered as MongoDB answers it: on
mongomock here, and on the wire server in tests/test_mongodb_integration_customer_races.py, so
the double and a server are held to the same answers."""
from datetime import timedelta

import pytest
from pymongo.errors import OperationFailure

from tests.conftest import TEST_DB
from utils.clock import utcnow

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def collection(mongo):
    collection = mongo[TEST_DB]["extensions"]
    collection.insert_one({"_id": 1, "a": {"x": 1, "b": 1}, "flag": False, "gone": "soon"})
    return collection


def projected(collection, expression):
    [document] = collection.aggregate([{"$project": {"_id": 0, "value": expression}}])
    return document.get("value")


def test_merge_objects_as_an_expression(collection):
    assert projected(collection, {"$mergeObjects": ["$a", {"b": 2, "c": "$flag"}, "$missing", None]}) == {
        "x": 1, "b": 2, "c": False}
    assert projected(collection, {"$mergeObjects": "$a"}) == {"x": 1, "b": 1}


def test_not_of_an_array_of_one(collection):
    assert projected(collection, {"$not": ["$flag"]}) is True
    assert projected(collection, {"$not": [{"$eq": ["$a.x", 1]}]}) is False
    assert projected(collection, {"$not": ["$missing"]}) is True


def test_an_array_literal_is_evaluated(collection):
    assert projected(collection, ["$a.x", 1, "$missing", {"$literal": "$a"}]) == [1, 1, None, "$a"]
    assert projected(collection, {"$concatArrays": [[], ["$a.b"]]}) == [1]


def test_the_unset_stage_in_an_aggregation_and_a_pipeline_update(collection):
    [document] = collection.aggregate([{"$unset": ["flag", "gone"]}])
    assert document == {"_id": 1, "a": {"x": 1, "b": 1}}
    collection.update_one({"_id": 1}, [{"$set": {"kept": True}}, {"$unset": "gone"}])
    assert collection.find_one({"_id": 1}) == {"_id": 1, "a": {"x": 1, "b": 1}, "flag": False, "kept": True}


def test_hello_tells_the_server_time(mongo):
    answer = mongo[TEST_DB].command("hello")
    assert abs(answer["localTime"].replace(tzinfo=None) - utcnow()) < timedelta(seconds=5)


def test_coll_mod_changes_a_ttl_index_expiry_in_place(mongo):
    database = mongo[TEST_DB]
    database["expiring"].create_index([("at", 1)], name="ttl_at", expireAfterSeconds=100)
    answer = database.command({"collMod": "expiring", "index": {"name": "ttl_at", "expireAfterSeconds": 50}})
    assert (answer["expireAfterSeconds_old"], answer["expireAfterSeconds_new"]) == (100, 50)
    database.command({"collMod": "expiring", "index": {"keyPattern": {"at": 1}, "expireAfterSeconds": 60}})
    assert database["expiring"].index_information()["ttl_at"]["expireAfterSeconds"] == 60
    with pytest.raises(OperationFailure) as missing:
        database.command({"collMod": "expiring", "index": {"name": "other", "expireAfterSeconds": 60}})
    assert missing.value.code == 27  # IndexNotFound
