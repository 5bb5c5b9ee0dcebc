"""Webhooks with many accounts (ACCOUNT_SOURCE=mongodb): each account's URL carries its own token,
derived from WEBHOOK_TOKEN and its id; a delivery is written into the records of the account whose
URL it came to, by a replica's one processor. Over real HTTP (waitress on 127.0.0.1); collected
again on the wire server by tests/test_mongodb_integration_fleet.py."""
from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest

from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedClient
from services.database import CALLS, CUSTOMERS, WEBHOOK_INBOX
from services.webhooks import DONE, FAILED, NOT_LISTED, WAITING, InboxProcessor
from worker.webhook_listener import account_token
from tests.conftest import TEST_DB
from tests.test_webhooks import TOKEN, deliver, started, state_of, wait_until  # noqa: F401 - `started`: a fixture
from utils.clock import utcnow
from worker.app import Runtime

pytestmark = pytest.mark.timeout(120)

ACTIVE = {"subscription": {"status": "active"}}


@pytest.fixture
def bolna():
    with FakeBolna([], [], api_key="key-alpha", label="alpha") as fake:
        fake.add_account("key-beta", [], [], label="beta")
        yield fake


@pytest.fixture
def hook_settings(settings, bolna):
    return settings.with_overrides(account_source="mongodb", bolna_api_key=None, bolna_base_url=bolna.base_url,
                                   webhook_port=0, webhook_host="127.0.0.1", webhook_token=TOKEN,
                                   webhook_allowed_ips=("127.0.0.1",))


@pytest.fixture
def users(whole_db):
    whole_db["users"].insert_many([
        {"_id": "alpha", "bolnaApiKey": "key-alpha", **ACTIVE},
        {"_id": "beta", "bolnaApiKey": "key-beta", "phoneRegion": "US", **ACTIVE},
    ])
    return whole_db["users"]


def replica(settings, mongo) -> Runtime:
    fleet = Runtime(settings, HookedClient(mongo)[TEST_DB])
    fleet.prepare()
    return fleet


def processed(mongo, count: int) -> bool:
    return mongo[TEST_DB][WEBHOOK_INBOX].count_documents({"state": {"$ne": WAITING}}) == count


def test_each_account_token_is_the_documented_hmac_of_its_id():
    expected = hmac.new(TOKEN.encode(), b"alpha", hashlib.sha256).hexdigest()
    assert account_token(TOKEN, "alpha") == expected
    assert account_token(TOKEN, "beta") != expected and account_token("another secret", "alpha") != expected


def test_each_account_url_writes_into_that_accounts_records(hook_settings, mongo, users, started):
    base = started(replica(hook_settings, mongo))
    alpha = state_of("call-in-both", "completed", 3, customer="+91 98765 43210")
    beta = state_of("call-in-both", "completed", 4, customer="(415) 555-0100")  # a US number, beta's region
    beta["extracted_data"]["name"] = "Asha"

    assert deliver(base, alpha, token=account_token(TOKEN, "alpha")).json() == {"status": "accepted"}
    assert deliver(base, beta, token=account_token(TOKEN, "beta")).json() == {"status": "accepted"}
    wait_until(lambda: processed(mongo, 2))

    raw = mongo[TEST_DB]
    assert {(call["userId"], call["callId"]) for call in raw[CALLS].find()} == {
        ("alpha", "call-in-both"), ("beta", "call-in-both")}
    customers = {customer["userId"]: (customer["phone"], customer["name"]) for customer in raw[CUSTOMERS].find()}
    assert customers == {"alpha": ("+919876543210", "Ravi"), "beta": ("+14155550100", "Asha")}
    assert {entry["userId"] for entry in raw[WEBHOOK_INBOX].find({"state": DONE})} == {"alpha", "beta"}


def test_the_daemons_own_token_and_an_unlisted_accounts_token_are_refused(hook_settings, mongo, users, started):
    db = HookedClient(mongo)[TEST_DB]
    db["users"].insert_one({"_id": "lapsed", "bolnaApiKey": "key-lapsed", "subscription": {"status": "cancelled"}})
    fleet = replica(hook_settings, mongo)
    base = started(fleet)
    for token in (TOKEN, account_token(TOKEN, "lapsed"), account_token("another secret", "alpha"),
                  account_token(TOKEN, "alpha")[:-1]):
        answer = deliver(base, state_of("w-1", "completed", 3), token=token)
        assert answer.status_code == 404
    assert mongo[TEST_DB][WEBHOOK_INBOX].count_documents({}) == 0
    fleet.deliveries.flush(force=True)
    assert fleet.deliveries.totals(utcnow() - timedelta(hours=1))["rejected_token"] == 4


def test_a_delivery_for_an_account_gone_before_processing_is_failed_and_not_written(hook_settings, mongo, users,
                                                                                    started):
    listening = replica(hook_settings, mongo)
    base = started(listening, processor=False)
    assert deliver(base, state_of("w-2", "completed", 3), token=account_token(TOKEN, "beta")).status_code == 200
    users.update_one({"_id": "beta"}, {"$set": {"subscription.status": "cancelled"}})

    processing = replica(hook_settings, mongo)  # reads the list after beta left
    assert processing.webhook_processor.process_batch() == 1

    entry = mongo[TEST_DB][WEBHOOK_INBOX].find_one({"callId": "w-2"})
    assert (entry["state"], entry["error"], "body" in entry) == (FAILED, NOT_LISTED, False)
    assert mongo[TEST_DB][CALLS].count_documents({}) == 0


def test_a_delivery_for_an_account_listed_after_this_replicas_read_is_written(hook_settings, mongo, users,
                                                                             bolna, started):
    processing = replica(hook_settings, mongo)  # has read the list before the account existed
    bolna.add_account("key-new", [], [], label="new")
    users.insert_one({"_id": "newcomer", "bolnaApiKey": "key-new", **ACTIVE})
    base = started(replica(hook_settings, mongo), processor=False)  # a replica that read it since
    token = account_token(TOKEN, "newcomer")
    assert deliver(base, state_of("w-3", "completed", 3), token=token).status_code == 200

    assert processing.webhook_processor.process_batch() == 1

    assert mongo[TEST_DB][CALLS].find_one({"callId": "w-3"})["userId"] == "newcomer"


def test_one_accounts_flood_delays_anothers_delivery_by_at_most_one_batch(hook_settings, mongo, users, started):
    fleet = replica(hook_settings, mongo)
    base = started(fleet, processor=False)
    batch, flood = 10, 35
    for n in range(flood):
        deliver(base, state_of(f"a-{n}", "completed", 3, customer=f"+9198765{n:05d}"),
                token=account_token(TOKEN, "alpha"))
    assert deliver(base, state_of("b-1", "completed", 3, customer="(415) 555-0100"),
                   token=account_token(TOKEN, "beta")).status_code == 200
    processor = InboxProcessor(fleet.webhook_processor.inbox, fleet.webhook_processor.writers_for,
                               fleet.deliveries, batch=batch)
    assert processor.process_batch() == batch
    assert mongo[TEST_DB][CALLS].count_documents({"userId": "beta", "callId": "b-1"}) == 1
    while processor.process_batch():
        pass
    assert mongo[TEST_DB][CALLS].count_documents({"userId": "alpha"}) == flood  # the flood is all written too


def test_each_account_has_its_own_cap(hook_settings, mongo, users, started):
    base = started(replica(hook_settings.with_overrides(webhook_max_waiting=2), mongo), processor=False)
    alpha, beta = account_token(TOKEN, "alpha"), account_token(TOKEN, "beta")
    codes = [deliver(base, state_of(f"a-{n}", "completed", 3), token=alpha).status_code for n in range(3)]
    assert codes == [200, 200, 429]
    assert deliver(base, state_of("b-1", "completed", 3), token=beta).status_code == 200
