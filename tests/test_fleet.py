"""Many accounts (worker/app.py's Runtime): accounts read from `users`, each synced with its own key into
its own records, a refused key set aside without stopping the others, replicas sharing the work
through the schedule, and the LLM ceiling across accounts."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from prometheus_client import generate_latest

from fakes.bolna_api import RateLimits
from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedClient
from services.database import CALLS, CONTACTS, CUSTOMERS, SYNC_RUNS, ACCOUNT_SCHEDULE
from services.accounts.schedule import REFUSED, LlmQuota
from tests.conftest import RAISED_LIMITS, TEST_DB
from tests.helpers import AGENT, execution
from utils.clock import utcnow
from worker.app import CALL_PROCESSOR, CRM_SYNC, Runtime, account_settings

SHARED_CALL = "call-in-both"
ACTIVE = {"subscription": {"status": "active"}}


class Clock:
    """The schedule's clock, moved by the test (a replica's death is a lease that runs out)."""

    def __init__(self):
        self.now = utcnow()
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def account_calls(words: str, name: str) -> list[dict]:
    """The same call id and number in every account; what was said differs per account."""
    return [execution(call_id=SHARED_CALL, extracted={"name": name}, transcript=f"assistant: Hello\nuser: {words}\n"),
            execution(customer="+91 91234 56789", extracted={"name": f"{name}'s friend"})]


@pytest.fixture
def bolna():
    fake = FakeBolna([AGENT], account_calls("I want to book a visit", "Ravi"), api_key="key-alpha",
                     label="alpha", rate_limits=RateLimits(**RAISED_LIMITS)).start()
    fake.add_account("key-beta", [AGENT], account_calls("not interested, bye", "Asha"), label="beta")
    yield fake
    fake.stop()


@pytest.fixture
def users(whole_db):
    users = whole_db["users"]
    users.insert_many([
        {"_id": "alpha", "bolnaApiKey": "key-alpha", **ACTIVE},
        {"_id": "beta", "bolnaApiKey": "key-beta", "subscription": {"status": "trial"}},
        {"_id": "lapsed", "bolnaApiKey": "key-lapsed", "subscription": {"status": "cancelled"}},
        {"_id": "revoked", "bolnaApiKey": "key-revoked", **ACTIVE},  # Bolna answers 403 for it
    ])
    return users


@pytest.fixture
def fleet_settings(settings, bolna):
    return settings.with_overrides(account_source="mongodb", bolna_api_key=None, bolna_base_url=bolna.base_url,
                                   account_lease_seconds=60, account_concurrency=2)


def replica(settings, mongo, clock) -> Runtime:
    fleet = Runtime(settings, HookedClient(mongo)[TEST_DB], clock=clock)
    fleet.prepare()
    return fleet


def every_account(fleet: Runtime) -> int:
    return fleet.work(ahead=timedelta(minutes=fleet.settings.sync_interval_minutes))


def test_each_account_is_synced_with_its_own_key_into_its_own_records(fleet_settings, mongo, users, bolna):
    fleet = replica(fleet_settings, mongo, Clock())
    assert every_account(fleet) == 3  # alpha, beta, revoked; not the cancelled one

    raw = mongo[TEST_DB]
    shared = {call["userId"]: call for call in raw[CALLS].find({"callId": SHARED_CALL})}
    assert set(shared) == {"alpha", "beta"}
    assert "book" in shared["alpha"]["transcript"] and "not interested" in shared["beta"]["transcript"]
    names = {(c["userId"], c["phone"]): c["name"] for c in raw[CUSTOMERS].find()}
    assert names[("alpha", "+919876543210")] == "Ravi" and names[("beta", "+919876543210")] == "Asha"
    assert {c["userId"] for c in raw[CONTACTS].find()} == {"alpha", "beta"}
    runs = {(run["userId"], run["job"]): run["status"] for run in raw[SYNC_RUNS].find()}
    assert runs[("alpha", CRM_SYNC)] == runs[("beta", CALL_PROCESSOR)] == "ok"
    assert raw[ACCOUNT_SCHEDULE].find_one({"_id": "lapsed"}) is None  # never listed, never synced


def test_a_refused_key_sets_its_account_aside_until_the_key_changes(fleet_settings, mongo, users, bolna, caplog):
    clock = Clock()
    fleet = replica(fleet_settings, mongo, clock)
    every_account(fleet)

    entry = mongo[TEST_DB][ACCOUNT_SCHEDULE].find_one({"_id": "revoked"})
    assert entry["refused"]["reason"] and entry["refused"]["since"]
    assert fleet.schedule.overview()["counts"][REFUSED] == 1
    assert "key-revoked" not in caplog.text and "key-alpha" not in caplog.text
    # The others synced in full; the refused account made one request and stopped.
    assert mongo[TEST_DB][SYNC_RUNS].count_documents({"userId": "revoked"}) == 1

    clock.advance(fleet_settings.sync_interval_minutes * 60)
    refused_requests = sum(1 for request in bolna.requests if request.account is None)
    assert every_account(fleet) == 2
    assert sum(1 for request in bolna.requests if request.account is None) == refused_requests  # skipped

    bolna.add_account("key-renewed", [AGENT], [execution(customer="+91 99887 76655")], label="renewed")
    users.update_one({"_id": "revoked"}, {"$set": {"bolnaApiKey": "key-renewed"}})
    fleet.refresh(force=True)
    clock.advance(fleet_settings.sync_interval_minutes * 60)
    assert every_account(fleet) == 3
    assert mongo[TEST_DB][CUSTOMERS].count_documents({"userId": "revoked"}) == 1


def test_two_replicas_split_the_accounts_and_never_sync_one_at_once(fleet_settings, mongo, whole_db, bolna):
    keys = [f"key-{n}" for n in range(8)]
    for key in keys:
        bolna.add_account(key, [AGENT], account_calls("please call me back tomorrow", key), label=key)
    whole_db["users"].insert_many([{"_id": key, "bolnaApiKey": key, **ACTIVE} for key in keys])
    clock = Clock()
    bolna.latency = 0.02  # a sync takes a moment, as over a network: the replicas overlap in time
    replicas = [replica(fleet_settings, mongo, clock) for _ in range(2)]
    synced, lock = [], threading.Lock()

    def watch(fleet):
        def on_run(run):
            with lock:
                synced.append(fleet.owner)
        return on_run

    for fleet in replicas:
        fleet.subscribe(watch(fleet))
    threads = [threading.Thread(target=every_account, args=(fleet,)) for fleet in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Each account's two jobs ran once, one after the other: a second replica syncing it at the
    # same time would have added runs of its own.
    runs = list(mongo[TEST_DB][SYNC_RUNS].find({}, {"userId": 1, "job": 1, "startedAt": 1, "finishedAt": 1}))
    assert sorted((run["userId"], run["job"]) for run in runs) == sorted(
        (key, job) for key in keys for job in (CRM_SYNC, CALL_PROCESSOR))
    for key in keys:
        crm, calls = (next(r for r in runs if r["userId"] == key and r["job"] == job) for job in (CRM_SYNC, CALL_PROCESSOR))
        assert crm["finishedAt"] <= calls["startedAt"]
    assert len(set(synced)) == 2  # both replicas took part


def test_an_account_of_a_dead_replica_is_taken_over_once_its_lease_runs_out(fleet_settings, mongo, users):
    clock = Clock()
    dead, alive = replica(fleet_settings, mongo, clock), replica(fleet_settings, mongo, clock)
    ahead = timedelta(minutes=fleet_settings.sync_interval_minutes)
    taken = dead.schedule.claim_due(clock() + ahead)  # ... and the replica dies before syncing it

    every_account(alive)
    assert mongo[TEST_DB][SYNC_RUNS].count_documents({"userId": taken.account_id}) == 0

    clock.advance(fleet_settings.account_lease_seconds + 1)
    assert every_account(alive) == 1
    assert mongo[TEST_DB][SYNC_RUNS].count_documents({"userId": taken.account_id}) >= 1
    assert dead.schedule.finish(taken, {"status": "ok"}) is False  # the dead replica's claim writes nothing


def test_the_llm_ceiling_holds_across_accounts(fleet_settings, mongo, whole_db, bolna):
    keys = [f"key-{n}" for n in range(4)]
    for key in keys:
        calls = [execution(customer=f"+91 98000 0000{i}", transcript="assistant: Hello\nuser: I want to buy it now\n")
                 for i in range(4)]
        bolna.add_account(key, [AGENT], calls, label=key)
    whole_db["users"].insert_many([{"_id": key, "bolnaApiKey": key, **ACTIVE} for key in keys])
    fleet = replica(fleet_settings.with_overrides(llm_global_limit=6, llm_calls_per_run=4), mongo, Clock())

    every_account(fleet)

    analyzed = mongo[TEST_DB][CALLS].count_documents({"processed": True, "analysis.status": {"$ne": "skipped"}})
    assert analyzed == 6  # 16 waiting, 4 per account per run, 6 in all this interval


def test_quota_grants_never_pass_the_ceiling_when_replicas_take_at_once(whole_db):
    clock = Clock()
    quota = LlmQuota(whole_db["llm_quota"], 25, timedelta(minutes=5), clock=clock)
    for _ in range(5):  # five windows, each one's counter created by the race itself
        clock.advance(300)
        grants, lock = [], threading.Lock()

        def take():
            for _ in range(5):
                grant = quota.take(4)
                with lock:
                    grants.append(grant)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(grants) == 20 and sum(grant.count for grant in grants) == 25
    unused = next(grant for grant in grants if grant.count)
    given_back = unused.count
    unused.settle(0)  # a run that analyzed nothing gives its share back
    assert quota.take(10).count == given_back


def test_account_settings_take_the_accounts_keys_and_limits_within_bolnas(settings):
    from services.accounts.source import Account

    account = Account("acct", bolna_api_key="bk", agent_ids=("a1",), groq_api_key="gk", phone_region="US",
                    llm_batch_limit=3, bolna_requests_per_minute=100_000_000)
    tuned = account_settings(settings, account, llm_limit=2)
    assert (tuned.bolna_api_key, tuned.bolna_agent_ids, tuned.groq_api_keys, tuned.default_phone_region) == (
        "bk", ("a1",), ("gk",), "US")
    assert tuned.llm_calls_per_run == 2
    assert tuned.bolna_listing_rate_per_minute == settings.bolna_listing_rate_per_minute  # never above Bolna's


def test_an_account_another_replica_listed_first_is_read_and_synced(fleet_settings, mongo, users, bolna):
    clock = Clock()
    early = replica(fleet_settings, mongo, clock)  # has read the list before the account existed
    bolna.add_account("key-new", [AGENT], [execution(customer="+91 90000 11111")], label="new")
    users.insert_one({"_id": "newcomer", "bolnaApiKey": "key-new", **ACTIVE})
    replica(fleet_settings, mongo, clock)  # registers it in the schedule

    every_account(early)

    assert mongo[TEST_DB][CUSTOMERS].count_documents({"userId": "newcomer"}) == 1


def test_metrics_count_accounts_by_state_never_by_account(fleet_settings, mongo, users):
    fleet = replica(fleet_settings, mongo, Clock())
    every_account(fleet)
    fleet.metrics.refresh()  # as the daemon's refresh job does every few seconds
    exposed = generate_latest(fleet.metrics.registry).decode()
    assert 'callsync_accounts{state="refused"} 1.0' in exposed
    assert 'callsync_accounts{state="waiting"} 2.0' in exposed
    assert 'callsync_runs_total{job="crm_sync",status="ok"} 2.0' in exposed
    assert "alpha" not in exposed and "key-" not in exposed


def test_health_counts_each_account_finished_not_only_passes_that_end(fleet_settings, mongo, users):
    """Behind a standing backlog no pass ends; a replica that keeps finishing accounts is healthy."""
    clock = Clock()
    fleet = replica(fleet_settings, mongo, clock)
    assert fleet.scheduled_jobs()[0].last_success_at() is None

    fleet.sync(fleet.schedule.claim_due(clock() + timedelta(minutes=fleet_settings.sync_interval_minutes)))

    assert fleet.scheduled_jobs()[0].last_success_at() is not None


def test_a_sync_whose_lease_may_have_run_out_stops_before_another_replica_can_claim_it(
        fleet_settings, mongo, users, bolna, caplog):
    """No renewal confirmed before the lease's end (here: the server's clock jumps past it while
    the account's jobs run): the jobs stop after their current write and nothing is recorded as
    this replica's sync; the account is then another replica's to claim."""
    clock = Clock()
    fleet = replica(fleet_settings, mongo, clock)
    claim = fleet.schedule.claim_due(clock() + timedelta(minutes=fleet_settings.sync_interval_minutes))
    key = {"alpha": "key-alpha", "beta": "key-beta"}.get(claim.account_id)
    if key is None:  # the refused account: no sync to cut short
        fleet.schedule.release(claim)
        claim = fleet.schedule.claim_due(clock() + timedelta(minutes=fleet_settings.sync_interval_minutes))
        key = {"alpha": "key-alpha", "beta": "key-beta"}[claim.account_id]
    bolna.latency = 0.3  # each request takes a moment: the sync is still running when the lease ends
    bolna.on_answer(r"/v2/agent/all", lambda: clock.advance(fleet_settings.account_lease_seconds + 1), api_key=key)

    fleet.sync(claim)

    entry = mongo[TEST_DB][ACCOUNT_SCHEDULE].find_one({"_id": claim.account_id})
    assert "lastRun" not in entry  # this replica recorded nothing: it no longer held the account
    assert mongo[TEST_DB][SYNC_RUNS].count_documents(
        {"userId": claim.account_id, "job": CALL_PROCESSOR, "status": "ok"}) == 0
    assert "account_lease_lost" in [getattr(record, "event", None) for record in caplog.records]
    other = replica(fleet_settings, mongo, clock)
    assert other.schedule.claim_due(clock() + timedelta(minutes=1)) is not None


def test_every_accounts_runs_reach_the_runtimes_listeners_and_metrics_with_the_account(fleet_settings, mongo, users,
                                                                                      bolna):
    """One runtime: each account's app is attached as the single account's is (worker/app.py,
    `Runtime.attach`), so a listener (the daemon's watchdog, `main.py once`) sees every run, with its account."""
    fleet = replica(fleet_settings, mongo, Clock())
    seen = []
    fleet.subscribe(seen.append)
    every_account(fleet)

    stored = {run["_id"]: run["userId"] for run in mongo[TEST_DB][SYNC_RUNS].find()}
    assert len(stored) == 5 and {run["_id"]: run["userId"] for run in seen} == stored  # revoked: its refused crm_sync
    metrics = generate_latest(fleet.metrics.registry).decode()
    assert 'callsync_runs_total{job="crm_sync",status="ok"} 2.0' in metrics
    assert 'callsync_runs_total{job="call_processor",status="ok"} 2.0' in metrics
