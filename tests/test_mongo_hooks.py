"""The mongomock adapter in fakes.mongo_hooks: the current driver's bulk writes run on mongomock
as they run on a server, and what mongomock cannot do is refused, not done differently."""
import mongomock
import pytest
from pymongo import ReplaceOne, UpdateOne
from pymongo.errors import OperationFailure

from fakes.mongo_hooks import HookedClient


def test_current_driver_bulk_updates_run_on_mongomock():
    coll = HookedClient(mongomock.MongoClient())["t"]["c"]
    result = coll.bulk_write([UpdateOne({"k": 1}, {"$set": {"v": 1}}, upsert=True),
                              UpdateOne({"k": 1}, {"$inc": {"v": 1}}),
                              ReplaceOne({"k": 2}, {"k": 2, "v": 7}, upsert=True)], ordered=False)
    assert (result.upserted_count, result.modified_count) == (2, 1)
    assert {d["k"]: d["v"] for d in coll.find({}, {"_id": 0})} == {1: 2, 2: 7}


def test_a_bulk_update_with_a_sort_is_refused_on_mongomock():
    coll = HookedClient(mongomock.MongoClient())["t"]["c"]
    coll.insert_many([{"k": 1, "n": 1}, {"k": 1, "n": 2}])
    with pytest.raises(NotImplementedError, match="sort"):
        coll.bulk_write([UpdateOne({"k": 1}, {"$set": {"hit": True}}, sort={"n": -1})])
    assert coll.count_documents({"hit": True}) == 0


def test_a_hint_is_checked_against_the_indexes_then_dropped_on_mongomock():
    coll = HookedClient(mongomock.MongoClient())["t"]["c"]
    coll.create_index([("k", 1), ("n", -1)], name="k_n")
    coll.insert_many([{"k": 1, "n": 1}, {"k": 1, "n": 2}])
    assert coll.find_one({"k": 1}, sort=[("n", -1)], hint=[("k", 1), ("n", -1)])["n"] == 2
    assert coll.find_one_and_update({"k": 1}, {"$set": {"hit": True}}, sort=[("n", 1)], hint="k_n")["n"] == 1
    with pytest.raises(OperationFailure, match="hint"):
        coll.find_one({"k": 1}, hint=[("n", 1)])
