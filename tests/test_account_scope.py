"""Scoping by account (services/accounts/scoped.py): every read and write of a account's app stays
inside its `userId`, and an attempt to leave it fails before it reaches the server."""
import threading

import pytest
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

from fakes.mongo_hooks import HookedClient
from services.bolna_client import BolnaClient
from services.database import (CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, SYNC_STATE, ensure_indexes,
                               account_view)
from services.accounts.scoped import AccountScopeError
from tests.conftest import TEST_DB
from tests.helpers import AGENT, execution
from worker.app import CALL_PROCESSOR, CRM_SYNC, Runtime


@pytest.fixture
def raw(mongo):
    database = HookedClient(mongo)[TEST_DB]
    ensure_indexes(database)
    return database


def test_writes_carry_the_account_and_reads_see_only_its_documents(raw):
    alpha, beta = account_view(raw, "alpha")[CUSTOMERS], account_view(raw, "beta")[CUSTOMERS]
    alpha.insert_one({"phone": "+919876543210", "name": "Ravi"})
    beta.update_one({"phone": "+919876543210"}, {"$set": {"name": "Asha"}}, upsert=True)
    beta.bulk_write([UpdateOne({"phone": "+14155550100"}, {"$set": {"name": "Lee"}}, upsert=True),
                     InsertOne({"phone": "+447700900000"})])

    assert {(d["userId"], d["phone"]) for d in raw[CUSTOMERS].find({}, {"_id": 0, "userId": 1, "phone": 1})} == {
        ("alpha", "+919876543210"), ("beta", "+919876543210"), ("beta", "+14155550100"), ("beta", "+447700900000")}
    assert alpha.find_one({"phone": "+919876543210"})["name"] == "Ravi"
    assert beta.count_documents({}) == 3
    assert [row["_id"] for row in alpha.aggregate([{"$group": {"_id": "$name"}}])] == ["Ravi"]
    assert alpha.delete_many({}).deleted_count == 1
    assert beta.count_documents({}) == 3


@pytest.mark.parametrize("attempt", [
    lambda c: c.find_one({"userId": "beta"}),
    lambda c: c.find({"userId": {"$in": ["alpha", "beta"]}}),
    lambda c: c.count_documents({"userId": {"$ne": "alpha"}}),
    lambda c: c.update_one({"phone": "+919876543210"}, {"$set": {"userId": "beta"}}),
    lambda c: c.update_many({}, {"$unset": {"userId": ""}}),
    lambda c: c.update_one({"phone": "x"}, [{"$set": {"userId": "beta"}}]),
    lambda c: c.update_one({"phone": "x"}, [{"$replaceWith": {"phone": "x"}}]),
    lambda c: c.update_one({"phone": "x"}, [{"$project": {"phone": 1}}]),
    lambda c: c.insert_one({"phone": "+1", "userId": "beta"}),
    lambda c: c.replace_one({"phone": "+1"}, {"phone": "+1", "userId": "beta"}),
    lambda c: c.delete_many({"userId": "beta"}),
    lambda c: c.aggregate([{"$lookup": {"from": CUSTOMERS, "pipeline": [], "as": "all"}}]),
    lambda c: c.aggregate([{"$unionWith": CUSTOMERS}]),
    lambda c: c.bulk_write([UpdateMany({"userId": "beta"}, {"$set": {"name": "x"}})]),
    lambda c: c.bulk_write([ReplaceOne({}, {"userId": "beta"})]),
    lambda c: c.bulk_write([DeleteOne({"userId": "beta"})]),
    lambda c: c.estimated_document_count(),
    lambda c: c.drop(),
], ids=["find_one", "find", "count", "set", "unset", "pipeline-set", "replaceWith", "project", "insert",
        "replace", "delete", "lookup", "unionWith", "bulk-update", "bulk-replace", "bulk-delete", "estimate",
        "drop"])
def test_a_cross_account_attempt_fails_and_changes_nothing(raw, attempt):
    account_view(raw, "beta")[CUSTOMERS].insert_one({"phone": "+919876543210", "name": "Asha"})
    alpha = account_view(raw, "alpha")[CUSTOMERS]
    alpha.insert_one({"phone": "+919876543210", "name": "Ravi"})
    before = sorted((d["userId"], d["name"]) for d in raw[CUSTOMERS].find())

    with pytest.raises(AccountScopeError):
        result = attempt(alpha)
        list(result) if hasattr(result, "__iter__") and not isinstance(result, dict) else None

    assert sorted((d["userId"], d["name"]) for d in raw[CUSTOMERS].find()) == before


def test_one_view_cannot_be_turned_into_another(raw):
    with pytest.raises(AccountScopeError):
        account_view(account_view(raw, "alpha"), "beta")
    assert account_view(account_view(raw, "alpha"), "alpha").account_id == "alpha"


def test_ids_made_from_shared_values_are_unique_per_account_and_unchanged_for_one(raw):
    assert account_view(raw, None)[CUSTOMER_CALLS].local_id("call-1") == "call-1"
    assert account_view(raw, "alpha")[CUSTOMER_CALLS].local_id("call-1") != account_view(raw, "beta")[
        CUSTOMER_CALLS].local_id("call-1")


@pytest.mark.parametrize("account_id", ["acme:", 7, ""])
def test_no_view_for_an_id_whose_records_ids_could_meet_another_accounts(raw, account_id):
    with pytest.raises(AccountScopeError, match="_id must"):
        account_view(raw, account_id)


def test_the_single_account_sees_the_documents_written_before_accounts_existed(raw):
    raw[CUSTOMERS].insert_one({"phone": "+919876543210", "name": "Ravi"})  # no userId: an older version
    assert account_view(raw, None)[CUSTOMERS].find_one({"phone": "+919876543210"})["name"] == "Ravi"
    assert account_view(raw, "alpha")[CUSTOMERS].find_one({"phone": "+919876543210"}) is None


def test_indexes_built_before_accounts_are_rebuilt_per_account(mongo):
    database = HookedClient(mongo)[TEST_DB]
    database[CALLS].create_index("callId", unique=True, name="callId_unique")
    database[CUSTOMERS].create_index("phone", unique=True, sparse=True, name="phone_unique")
    database[CUSTOMERS].create_index("crmOwner", name="front_end_index")  # another program's: kept
    database[CALLS].insert_one({"callId": "call-1"})

    ensure_indexes(database)

    assert list(database[CALLS].index_information()["callId_unique"]["key"]) == [("userId", 1), ("callId", 1)]
    assert list(database[CUSTOMERS].index_information()["phone_unique"]["key"]) == [("userId", 1), ("phone", 1)]
    assert "front_end_index" in database[CUSTOMERS].index_information()
    account_view(database, "alpha")[CALLS].insert_one({"callId": "call-1"})  # another account's call-1
    assert database[CALLS].count_documents({"callId": "call-1"}) == 2


def test_same_number_and_same_call_id_in_two_accounts_stay_apart(settings, mongo, bolna_server):
    """Both accounts' Bolna serve the same call id for the same number, with different data; each
    account's customer, call and contact hold its own, and neither job reads the other's."""
    shared_id = "call-shared-1"
    apps = {}
    for account, name, words in (("alpha", "Ravi", "I want to book a visit"), ("beta", "Asha", "not interested, bye")):
        server = bolna_server([execution(call_id=shared_id, extracted={"name": name},
                                         transcript=f"assistant: Hello\nuser: {words}\n")], [AGENT])
        account_settings = settings.with_overrides(bolna_base_url=server.base_url)
        app = Runtime(account_settings, HookedClient(mongo)[TEST_DB],
                      bolna=BolnaClient.from_settings(account_settings, stop=threading.Event()), account_id=account)
        app.prepare()
        apps[account] = app
    try:
        for app in apps.values():
            for job in (CRM_SYNC, CALL_PROCESSOR):
                assert app.run_job(job)["status"] == "ok"
        for app in apps.values():  # a second round: updates, never each other's
            for job in (CRM_SYNC, CALL_PROCESSOR):
                assert app.run_job(job)["status"] == "ok"
    finally:
        for app in apps.values():
            app.close()

    raw = mongo[TEST_DB]
    customers = {d["userId"]: d for d in raw[CUSTOMERS].find()}
    assert {account: c["name"] for account, c in customers.items()} == {"alpha": "Ravi", "beta": "Asha"}
    assert customers["alpha"]["phone"] == customers["beta"]["phone"] == "+919876543210"
    calls = {d["userId"]: d for d in raw[CALLS].find({"callId": shared_id})}
    assert set(calls) == {"alpha", "beta"}
    assert "book" in calls["alpha"]["transcript"] and "not interested" in calls["beta"]["transcript"]
    contacts = {d["userId"]: d for d in raw[CONTACTS].find()}
    assert set(contacts) == {"alpha", "beta"}
    assert contacts["alpha"]["tag"] != contacts["beta"]["tag"]
    assert raw[CUSTOMER_CALLS].count_documents({}) == 2
    assert {d["userId"] for d in raw[SYNC_STATE].find()} == {"alpha", "beta"}
    assert {d["userId"] for d in raw["sync_runs"].find()} == {"alpha", "beta"}


# ---- deny by default (issue 23, hole 7): each way out that the view once let through

FACET_LOOKUP = [{"$facet": {"all": [{"$lookup": {"from": CUSTOMERS, "pipeline": [], "as": "others"}}]}}]
FACET_UNION = [{"$facet": {"all": [{"$unionWith": {"coll": CUSTOMERS, "pipeline": []}}]}}]
CASE_BLIND = {"locale": "en", "strength": 1}  # would make userId "alpha" match "ALPHA"


@pytest.mark.parametrize("attempt", [
    lambda view: view[CUSTOMERS].aggregate(FACET_LOOKUP),
    lambda view: view[CUSTOMERS].aggregate(FACET_UNION),
    lambda view: view[CUSTOMERS].aggregate([{"$match": {}}, {"$graphLookup": {
        "from": CUSTOMERS, "startWith": "$phone", "connectFromField": "phone", "connectToField": "phone",
        "as": "others"}}]),
    lambda view: view[CUSTOMERS].update_many({}, {"$rename": {"name": "userId"}}),
    lambda view: view[CUSTOMERS].update_many({}, [{"$project": {"_id": 1}}]),
    lambda view: view[CUSTOMERS].update_many({}, [{"$project": {"_id": 1, "name": 1}}]),
    lambda view: view[CUSTOMERS].update_many({}, [{"$replaceRoot": {"newRoot": {"phone": "$phone"}}}]),
    lambda view: view[CUSTOMERS].update_many({}, [{"$unset": ["name", "userId"]}]),
    lambda view: view[CUSTOMERS].find({"$where": "true"}),
    lambda view: view[CUSTOMERS].find({}, collation=CASE_BLIND),
    lambda view: view[CUSTOMERS].find({}).collation(CASE_BLIND),
    lambda view: view[CUSTOMERS].update_many({}, {"$set": {"name": "x"}}, collation=CASE_BLIND),
    lambda view: view[CUSTOMERS].bulk_write([DeleteOne({}, collation=CASE_BLIND)]),
    lambda view: view[CUSTOMERS].database[CUSTOMERS].find(),
    lambda view: view[CUSTOMERS].with_options(),
    lambda view: view.customers.database,
    lambda view: view.command("ping") and view.command({"dropDatabase": 1}),
    lambda view: view.command({"collMod": "users", "index": {"name": "ttl_at", "expireAfterSeconds": 1}}),
    lambda view: view.command({"collMod": CUSTOMERS, "validator": {"userId": "alpha"}}),
    lambda view: view.command({"collMod": CUSTOMERS, "index": {"name": "phone_unique", "hidden": True}}),
    lambda view: view.drop_collection(CUSTOMERS),
    lambda view: view.client,
    lambda view: view["users"].find(),
    lambda view: view.get_collection("tenant_schedule"),
], ids=["facet-lookup", "facet-unionWith", "graphLookup", "rename-into-userId", "project-only-id",
        "project-some", "replaceRoot", "unset-userId-in-list", "where", "collation", "cursor-collation",
        "update-collation", "bulk-collation", "collection-database", "with_options", "attribute-database",
        "command", "collMod-shared", "collMod-validator", "collMod-hidden", "drop_collection", "client", "shared-collection", "shared-get_collection"])
def test_an_operation_the_view_does_not_offer_is_refused_by_name(raw, attempt):
    beta = account_view(raw, "beta")[CUSTOMERS]
    beta.insert_one({"phone": "+919876543210", "name": "Asha"})
    account_view(raw, "alpha")[CUSTOMERS].insert_one({"phone": "+919876543210", "name": "Ravi"})
    raw["users"].insert_one({"_id": "beta", "bolnaApiKey": "secret"})
    before = list(raw[CUSTOMERS].find(sort=[("userId", 1)]))

    with pytest.raises(AccountScopeError, match=r"not available|may not|not an account's"):
        result = attempt(account_view(raw, "alpha"))
        list(result) if hasattr(result, "__next__") else None

    assert list(raw[CUSTOMERS].find(sort=[("userId", 1)])) == before
    assert raw["users"].count_documents({}) == 1


def test_a_collection_by_attribute_is_the_scoped_one(raw):
    account_view(raw, "beta")[CUSTOMERS].insert_one({"phone": "+919876543210", "name": "Asha"})
    alpha = account_view(raw, "alpha")
    alpha.customers.insert_one({"phone": "+919876543210", "name": "Ravi"})

    assert [d["name"] for d in alpha.customers.find()] == ["Ravi"]
    assert alpha.customers.delete_many({}).deleted_count == 1
    assert raw[CUSTOMERS].count_documents({"userId": "beta"}) == 1


def test_what_the_daemon_uses_still_passes(raw):
    """The allowed side of the lists: a pipeline update with an exclusion `$project`, `$push`
    with its modifiers, a cursor's sort and limit, the server's clock, the index methods."""
    alpha = account_view(raw, "alpha")
    alpha[CUSTOMERS].update_one({"phone": "+1"}, [{"$set": {"_tmp": 1, "name": "Ravi"}}, {"$project": {"_tmp": 0}}],
                                upsert=True)
    alpha[CUSTOMERS].update_one({"phone": "+1"}, {"$push": {"past": {"$each": [2, 1], "$sort": 1, "$slice": -5}}})
    assert [d["past"] for d in alpha[CUSTOMERS].find({"phone": "+1"}).sort("phone", 1).limit(1)] == [[1, 2]]
    assert raw[CUSTOMERS].find_one({"phone": "+1"}, {"_id": 0}) == {"phone": "+1", "userId": "alpha", "name": "Ravi",
                                                                     "past": [1, 2]}
    assert alpha.command("ping")["ok"]
    assert "phone_unique" in alpha[CUSTOMERS].index_information()
    assert alpha.list_collection_names() and set(alpha.list_collection_names()) <= set(raw.list_collection_names())
    assert "users" not in alpha.list_collection_names()
