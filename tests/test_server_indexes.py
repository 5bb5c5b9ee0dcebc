"""The indexes and writes that only a real server judges (the wire server the test run starts,
or MONGODB_URI): unique phones that never collide for records without one, the upgrade from
the earlier partial phone index, and an old record mongomock and a server read differently; leases
stored in the earlier shapes rewritten at start; a changed retention changed in place (`collMod`);
the activities' key rebuilt with `record`."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from fakes.mongo_hooks import HookedClient, RoundTripCounter
from models.locks import HELD_ON_CONTACT, HELD_ON_CUSTOMER, held_back_key
from services.database import (ACTIVITIES, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, PHONE_INDEX, ACCOUNT_SCHEDULE,
                               WEBHOOK_INBOX, ensure_indexes)
from tests.conftest import TEST_DB
from tests.helpers import build_app, execution
from tests.real_mongo import mongo  # noqa: F401 - the test database on the server, dropped after
from tests.test_run_retention import (  # noqa: F401 - collected again, on the server
    test_a_changed_retention_changes_the_ttl_index_in_place)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("collection", [CUSTOMERS, CONTACTS])
def test_phone_is_unique_and_records_without_one_never_collide(mongo, collection):
    db = mongo[TEST_DB]
    ensure_indexes(db)
    db[collection].insert_many([{"name": "from another program"}, {"name": "also without a phone"},
                                {"phone": "+919876543210"}, {"phone": "12345", "phoneValid": False},
                                {"phone": "98765-bad", "phoneValid": False}])
    with pytest.raises(DuplicateKeyError):
        db[collection].insert_one({"phone": "+919876543210"})
    with pytest.raises(DuplicateKeyError):
        db[collection].insert_one({"phone": "12345"})


def test_the_earlier_partial_phone_index_is_replaced_by_one_the_planner_uses(mongo):
    db = mongo[TEST_DB]
    for collection in (CUSTOMERS, CONTACTS):
        db[collection].create_index([("phone", ASCENDING)], unique=True, name=PHONE_INDEX,
                                    partialFilterExpression={"phone": {"$type": "string"}})
        db[collection].insert_many([{"phone": "+919876543210"}, {"name": "no phone"}, {"name": "none either"}])
    ensure_indexes(db)
    ensure_indexes(db)  # idempotent once replaced
    for collection in (CUSTOMERS, CONTACTS):
        index = db[collection].index_information()[PHONE_INDEX]
        assert "partialFilterExpression" not in index and index["unique"] and index["sparse"]
        plan = db[collection].find({"userId": None, "phone": "+919876543210"}).explain()["queryPlanner"]["winningPlan"]
        assert plan["inputStage"]["stage"] == "IXSCAN", plan
        with pytest.raises(DuplicateKeyError):
            db[collection].insert_one({"phone": "+919876543210"})


def test_the_activities_key_built_without_the_held_record_is_rebuilt_once(mongo):
    """`decision_unique` as an earlier version built it: a call's customer and contact shared one
    `held_back` key. Rebuilt with `record` at start, once; what it kept unique still is."""
    operations = RoundTripCounter()
    db = HookedClient(mongo, operations)[TEST_DB]
    db[ACTIVITIES].create_index([("userId", ASCENDING), ("callId", ASCENDING), ("type", ASCENDING),
                                 ("round", ASCENDING)], unique=True, name="decision_unique")
    db[ACTIVITIES].insert_one({"callId": "c1", "type": "ai_analysis", "round": 0})
    ensure_indexes(db)
    ensure_indexes(db)
    assert operations.by_method["drop_index"] == 1  # idempotent once rebuilt
    assert list(db[ACTIVITIES].index_information()["decision_unique"]["key"]) == [
        ("userId", 1), ("callId", 1), ("type", 1), ("round", 1), ("record", 1)]
    db[ACTIVITIES].insert_many([held_back_key("c1", 0, HELD_ON_CUSTOMER), held_back_key("c1", 0, HELD_ON_CONTACT)])
    for again in (held_back_key("c1", 0, HELD_ON_CONTACT), {"callId": "c1", "type": "ai_analysis", "round": 0}):
        with pytest.raises(DuplicateKeyError):
            db[ACTIVITIES].insert_one(again)


def test_a_customer_whose_call_ids_are_not_an_array_is_migrated_not_split_into_characters(
        mongo, settings, bolna_server):
    """An older record with `callIds` as a string: mongomock's `$setUnion` split it into characters
    (callCount 9 for "call-0001") and a server refused the update, failing every run. Now the
    old array, whatever its shape, becomes links, and the record stops carrying it."""
    db = mongo[TEST_DB]
    ensure_indexes(db)
    db[CUSTOMERS].insert_one({"phone": "+919876543210", "callIds": "call-0001", "callCount": 1})
    bolna = bolna_server([execution("+91 98765 43210", call_id="new-1"), execution("+91 91234 56789")],
                         [{"id": "agent-1", "agent_name": "Sales", "agent_status": "processed"}])
    app = build_app(settings, mongo, bolna)
    assert app.run_job("crm_sync")["status"] == "ok"
    stored = db[CUSTOMERS].find_one({"phone": "+919876543210"})
    assert "callIds" not in stored and stored["callCount"] == 2
    assert {link["_id"] for link in db[CUSTOMER_CALLS].find({"phone": "+919876543210"})} == {"call-0001", "new-1"}


def test_leases_stored_in_the_earlier_shapes_are_rewritten_in_one_vocabulary_at_start(mongo):
    db = mongo[TEST_DB]
    until = datetime(2026, 6, 1, 12, 0)
    claim = {"owner": "host:1:x", "token": "t", "claimedAt": until - timedelta(minutes=5), "expiresAt": until}
    db[CALLS].insert_many([{"callId": "c1", "processed": False, "terminal": True, "claim": claim},
                           {"callId": "c2", "processed": True, "terminal": True}])
    db[WEBHOOK_INBOX].insert_one({"callId": "c1", "status": "completed", "state": "waiting", "claim": claim})
    db[ACCOUNT_SCHEDULE].insert_one({"_id": "a1", "dueAt": until, "active": True,
                                    "lease": {"owner": "host:1:x", "token": "t", "claimedAt": until, "until": until}})
    ensure_indexes(db)
    ensure_indexes(db)  # idempotent
    migrated = {"acquired_by": "host:1:x", "acquired_until": until, "acquired_token": "t"}
    for collection, old in ((CALLS, "claim"), (WEBHOOK_INBOX, "claim"), (ACCOUNT_SCHEDULE, "lease")):
        doc = db[collection].find_one({"acquired_token": {"$exists": True}})
        assert old not in doc and {key: doc[key] for key in migrated} == migrated, collection
    assert set(db[CALLS].find_one({"callId": "c2"})) == {"_id", "callId", "processed", "terminal"}
