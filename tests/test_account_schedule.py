"""The account schedule (services/accounts/schedule.py): registering the account list, claims under
leases, and that replicas sharing it never sync one account at once. On mongomock through the `whole_db`
fixture (each operation whole, as on a server); tests/test_mongodb_integration_account_schedule.py
runs them again on a real server."""
from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from pymongo.errors import BulkWriteError

from fakes.mongo_hooks import HookedClient, RoundTripCounter
from services.database import SCHEDULE_INDEXES
from services.accounts.schedule import (DUE, REFUSED, RETIRED, RUNNING, WAITING, AccountSchedule, first_due_times,
                                       next_due)
from tests.conftest import TEST_DB
from worker.status import collect

pytestmark = pytest.mark.timeout(120)

START = datetime(2025, 3, 1, 9, 0)
INTERVAL = 60  # seconds
LEASE = 30
COLLECTION = "tenant_schedule"


class FakeClock:
    """One clock for every replica of a test, as the database server's is; moved by hand."""

    def __init__(self, start: datetime = START):
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def schedule_collection(whole_db):
    collection = whole_db[COLLECTION]
    collection.create_indexes(SCHEDULE_INDEXES)
    return collection


@pytest.fixture
def replica(schedule_collection, clock):
    """replica(owner) -> a AccountSchedule of that replica on the shared collection and clock."""
    def make(owner: str = "host-a:1:x") -> AccountSchedule:
        return AccountSchedule(schedule_collection, owner, LEASE, INTERVAL, clock)
    return make


def stored(collection, account_id) -> dict:
    return collection.find_one({"_id": account_id})


def make_due(collection, clock, *account_ids) -> None:
    """Bring the accounts' first slots forward to now (register spreads them over an interval)."""
    collection.update_many({"_id": {"$in": list(account_ids)}}, {"$set": {"dueAt": clock()}})


def claim_all(schedule: AccountSchedule) -> list:
    claims = []
    while (claim := schedule.claim_due()) is not None:
        claims.append(claim)
    return claims


# -- the next due time ------------------------------------------------------------------------

def test_next_due_keeps_the_slot_when_the_sync_ends_in_time():
    interval = timedelta(minutes=5)
    assert next_due(START, interval, START + timedelta(seconds=40)) == START + interval


def test_next_due_skips_whole_slots_after_an_overrun_or_an_outage():
    interval = timedelta(minutes=5)
    # The sync overran its next slot: the slot after it, not "now + interval".
    assert next_due(START, interval, START + timedelta(minutes=7)) == START + 2 * interval
    # Replicas were down for an hour: the first slot at least half an interval ahead.
    assert next_due(START, interval, START + timedelta(minutes=61)) == START + 13 * interval


def test_next_due_is_never_sooner_than_half_an_interval_after_the_sync_ended():
    interval = timedelta(minutes=5)
    ended = START + timedelta(minutes=4, seconds=50)  # 10 s before the next slot
    assert next_due(START, interval, ended) == START + 2 * interval
    assert next_due(START, interval, START + timedelta(minutes=2, seconds=29)) == START + interval


def test_first_due_times_spread_evenly_over_one_interval():
    interval = timedelta(minutes=10)
    times = first_due_times(10_000, interval, START)
    assert times[0] == START and max(times) < START + interval
    per_minute = defaultdict(int)
    for due in times:
        per_minute[(due - START) // timedelta(minutes=1)] += 1
    assert set(per_minute.values()) == {1000}
    assert first_due_times(1, interval, START) == [START]


# -- register ---------------------------------------------------------------------------------

def test_new_accounts_are_spread_over_one_interval_and_a_lone_newcomer_is_due_at_once(replica, schedule_collection,
                                                                                     clock):
    result = replica().register([(f"t{n}", "fp") for n in range(60)])
    assert result.added == 60
    dues = sorted(doc["dueAt"] for doc in schedule_collection.find())
    assert dues[0] == START and dues[-1] < START + timedelta(seconds=INTERVAL)
    assert len(set(dues)) == 60  # one a second: no two bunched
    assert all(doc["active"] and doc["keyFingerprint"] == "fp" for doc in schedule_collection.find())

    clock.advance(5)
    assert replica().register([(f"t{n}", "fp") for n in range(61)]).added == 1
    assert stored(schedule_collection, "t60")["dueAt"] == clock()


@pytest.fixture
def counted(mongo, clock):
    """(schedule, its collection, the counter of the collection's round trips)."""
    counter = RoundTripCounter()
    collection = HookedClient(mongo, counter)[TEST_DB][COLLECTION]
    collection.create_indexes(SCHEDULE_INDEXES)
    return AccountSchedule(collection, "host-a:1:x", LEASE, INTERVAL, clock), collection, counter


def test_a_second_register_of_an_unchanged_list_writes_nothing(counted, clock):
    schedule, collection, counter = counted
    accounts = [(f"t{n}", "fp") for n in range(5)]
    schedule.register(accounts)
    before = list(collection.find(sort=[("_id", 1)]))
    counter.reset()
    clock.advance(10)
    result = schedule.register(accounts)
    assert (result.added, result.rekeyed, result.retired, result.returned) == (0, 0, 0, 0)
    assert dict(counter.by_method) == {"find": 1}
    assert list(collection.find(sort=[("_id", 1)])) == before


def test_a_changed_key_clears_the_refusal_and_the_account_is_due_again(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([("t1", "fp-1"), ("t2", "fp-2")])
    make_due(schedule_collection, clock, "t1", "t2")
    claim = schedule.claim_due()
    assert claim.account_id == "t1" and claim.key_fingerprint == "fp-1"
    assert schedule.mark_refused(claim, "401 invalid api key")

    # The same key again: still refused.
    assert schedule.register([("t1", "fp-1"), ("t2", "fp-2")]).rekeyed == 0
    assert [c.account_id for c in claim_all(schedule)] == ["t2"]

    result = schedule.register([("t1", "fp-1b"), ("t2", "fp-2")])
    assert result.rekeyed == 1
    doc = stored(schedule_collection, "t1")
    assert doc["active"] and "refused" not in doc and doc["keyFingerprint"] == "fp-1b"
    again = schedule.claim_due()
    assert again.account_id == "t1" and again.key_fingerprint == "fp-1b"


def test_unlisted_accounts_are_retired_and_return_when_listed_again(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([("t1", "a"), ("t2", "b"), ("t3", "c")])
    make_due(schedule_collection, clock, "t1", "t2", "t3")
    result = schedule.register([("t1", "a")])
    assert (result.retired, result.added) == (2, 0)
    assert stored(schedule_collection, "t2")["retiredAt"] == clock()
    assert [c.account_id for c in claim_all(schedule)] == ["t1"]

    clock.advance(1)
    result = schedule.register([("t1", "a"), ("t2", "b"), ("t3", "c")])
    assert (result.returned, result.retired) == (2, 0)
    assert all(doc["active"] and "retiredAt" not in doc for doc in schedule_collection.find())
    # Their slot was kept, and passed while they were away: due at once.
    assert sorted(c.account_id for c in claim_all(schedule)) == ["t2", "t3"]


def test_a_retired_account_whose_key_was_refused_returns_still_refused(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([("t1", "a"), ("t2", "b")])
    make_due(schedule_collection, clock, "t1", "t2")
    claim = schedule.claim_due()
    schedule.mark_refused(claim, "403")
    schedule.register([("t2", "b")])
    assert stored(schedule_collection, "t1")["retiredAt"]
    assert schedule.register([("t1", "a"), ("t2", "b")]).returned == 1
    doc = stored(schedule_collection, "t1")
    assert "retiredAt" not in doc and not doc["active"] and doc["refused"]["reason"] == "403"
    assert [c.account_id for c in claim_all(schedule)] == ["t2"]


def test_a_account_another_replica_registered_meanwhile_is_passed_over(mongo, clock):
    other_replica = AccountSchedule(HookedClient(mongo)[TEST_DB][COLLECTION], "host-b:2:y", LEASE, INTERVAL, clock)

    def register_first(collection, method):
        # Between this replica's read and its write, the other replica registers t2.
        if method == "bulk_write" and not raced:
            raced.append(other_replica.register([("t2", "b")]))

    raced: list = []
    collection = HookedClient(mongo, register_first)[TEST_DB][COLLECTION]
    collection.create_indexes(SCHEDULE_INDEXES)
    result = AccountSchedule(collection, "host-a:1:x", LEASE, INTERVAL, clock).register(
        [("t1", "a"), ("t2", "b"), ("t3", "c")])
    assert raced and result.added == 3
    assert sorted(doc["_id"] for doc in collection.find({"active": True})) == ["t1", "t2", "t3"]


def test_a_failed_write_of_register_is_raised(mongo, clock):
    collection = HookedClient(mongo)[TEST_DB][COLLECTION]
    collection.create_indexes(SCHEDULE_INDEXES)
    collection.create_index([("keyFingerprint", 1)], unique=True)  # any write error but a duplicate account
    with pytest.raises(BulkWriteError):
        AccountSchedule(collection, "host-a:1:x", LEASE, INTERVAL, clock).register([("t1", "a"), ("t2", "a")])


def test_registering_10000_accounts_takes_two_round_trips(counted):
    schedule, collection, counter = counted
    accounts = [(f"t{n:05d}", "fp") for n in range(10_000)]
    counter.reset()
    assert schedule.register(accounts).added == 10_000
    assert dict(counter.by_method) == {"find": 1, "bulk_write": 1}

    # A thousand rekeyed, a thousand gone, a thousand new: still two.
    changed = ([(account_id, "fp-new") for account_id, _ in accounts[:1000]] + accounts[1000:9000]
               + [(f"n{n:05d}", "fp") for n in range(1000)])
    counter.reset()
    result = schedule.register(changed)
    assert (result.added, result.rekeyed, result.retired) == (1000, 1000, 1000)
    assert dict(counter.by_method) == {"find": 1, "bulk_write": 1}
    assert collection.count_documents({"active": True}) == 10_000
    assert collection.count_documents({"keyFingerprint": "fp-new"}) == 1000


# -- claims -----------------------------------------------------------------------------------

def test_only_due_accounts_are_claimed_oldest_due_first(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([("t1", "a"), ("t2", "b"), ("t3", "c")])
    schedule_collection.update_one({"_id": "t1"}, {"$set": {"dueAt": START - timedelta(seconds=5)}})
    schedule_collection.update_one({"_id": "t2"}, {"$set": {"dueAt": START - timedelta(seconds=50)}})
    schedule_collection.update_one({"_id": "t3"}, {"$set": {"dueAt": START + timedelta(seconds=1)}})
    first = schedule.claim_due()
    assert (first.account_id, first.due_at) == ("t2", START - timedelta(seconds=50))
    assert first.claimed_at == START and first.acquired_until == START + timedelta(seconds=LEASE)
    assert schedule.claim_due().account_id == "t1"
    assert schedule.claim_due() is None  # t3 is not due yet
    clock.advance(1)
    assert schedule.claim_due().account_id == "t3"
    lease = stored(schedule_collection, "t2")
    assert lease["acquired_by"] == "host-a:1:x" and lease["acquired_token"] == first.token


def test_a_live_lease_is_left_alone_and_an_expired_one_taken_over(replica, schedule_collection, clock):
    a, b = replica("host-a:1:x"), replica("host-b:2:y")
    a.register([("t1", "a")])
    held = a.claim_due()
    assert held is not None
    # Replica a dies holding t1. Until its lease ends, nobody takes t1.
    clock.advance(LEASE - 1)
    assert b.claim_due() is None
    clock.advance(1)
    taken = b.claim_due()
    assert taken.account_id == "t1" and taken.token != held.token and taken.due_at == held.due_at
    assert stored(schedule_collection, "t1")["acquired_by"] == "host-b:2:y"
    # Replica a, had it only been paused, can no longer write anything for t1.
    assert not a.renew(held) and not a.finish(held, {"status": "ok"})
    assert not a.release(held) and not a.mark_refused(held, "401")
    doc = stored(schedule_collection, "t1")
    assert doc["acquired_token"] == taken.token and "lastRun" not in doc and doc["active"]
    assert b.finish(taken, {"status": "ok"})


def test_renew_keeps_a_long_sync_from_being_taken_over(replica, clock):
    a, b = replica("host-a:1:x"), replica("host-b:2:y")
    a.register([("t1", "a")])
    held = a.claim_due()
    for _ in range(3):
        clock.advance(LEASE - 5)
        assert a.renew(held)
        assert b.claim_due() is None
    clock.advance(LEASE)
    assert b.claim_due().account_id == "t1"


def test_finish_records_the_run_and_sets_the_next_slot(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([("t1", "a")])
    claim = schedule.claim_due()
    clock.advance(12)
    assert schedule.finish(claim, {"status": "partial", "errors": ["page 3: timeout"], "calls": 40})
    doc = stored(schedule_collection, "t1")
    assert "lease" not in doc and doc["dueAt"] == START + timedelta(seconds=INTERVAL)
    assert doc["lastRun"] == {"status": "partial", "errors": ["page 3: timeout"], "calls": 40, "startedAt": START,
                              "finishedAt": START + timedelta(seconds=12), "owner": "host-a:1:x"}
    assert schedule.claim_due() is None
    clock.advance(INTERVAL - 12)
    again = schedule.claim_due()
    # A pass that claimed by a later `due_by` (`after`) must not meet it again: the first slot past it.
    assert schedule.finish(again, {"status": "ok"}, after=START + timedelta(hours=1))
    assert stored(schedule_collection, "t1")["dueAt"] == START + timedelta(hours=1, seconds=INTERVAL)


def test_a_result_without_a_status_is_refused(replica):
    schedule = replica()
    schedule.register([("t1", "a")])
    with pytest.raises(ValueError):
        schedule.finish(schedule.claim_due(), {"calls": 3})


def test_release_gives_the_account_back_still_due(replica, schedule_collection):
    a, b = replica("host-a:1:x"), replica("host-b:2:y")
    a.register([("t1", "a")])
    claim = a.claim_due()
    assert a.release(claim)
    doc = stored(schedule_collection, "t1")
    assert "lease" not in doc and doc["dueAt"] == START and "lastRun" not in doc
    assert b.claim_due().account_id == "t1"
    assert not a.release(claim)


def test_a_refused_account_is_skipped_and_the_others_go_on(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([("t1", "a"), ("t2", "b")])
    make_due(schedule_collection, clock, "t1", "t2")
    claim = schedule.claim_due()
    clock.advance(2)
    assert schedule.mark_refused(claim, "401 unauthorized")
    doc = stored(schedule_collection, "t1")
    assert doc["refused"] == {"reason": "401 unauthorized", "since": START + timedelta(seconds=2),
                              "keyFingerprint": "a"}
    assert not doc["active"] and "lease" not in doc and doc["dueAt"] == START
    assert doc["lastRun"]["status"] == REFUSED and doc["lastRun"]["errors"] == ["401 unauthorized"]
    [other] = claim_all(schedule)
    assert other.account_id == "t2"
    schedule.finish(other, {"status": "ok"}, after=START + timedelta(days=1))
    clock.advance(10 * INTERVAL)
    assert schedule.claim_due() is None  # t1 is skipped however long it has been due


def test_a_key_that_changed_during_the_sync_is_not_marked_refused(replica, schedule_collection):
    schedule = replica()
    schedule.register([("t1", "old")])
    claim = schedule.claim_due()
    schedule.register([("t1", "new")])  # the account's key was replaced meanwhile
    assert not schedule.mark_refused(claim, "401")
    doc = stored(schedule_collection, "t1")
    assert doc["active"] and "refused" not in doc and "lease" not in doc
    assert schedule.claim_due().key_fingerprint == "new"


# -- replicas ---------------------------------------------------------------------------------

def test_replicas_never_sync_one_account_at_once_and_sync_every_account(schedule_collection, clock):
    """Four replicas claim, hold for a moment (a sync) and finish, over 12 accounts for five
    intervals of the shared clock. Each hold is recorded from after its claim returned to before
    its finish was sent, so a recorded hold lies within the real one: two that overlap for one
    account are two replicas syncing it at once."""
    accounts = [(f"t{n:02d}", "fp") for n in range(12)]
    interval = 10
    AccountSchedule(schedule_collection, "registrar", LEASE * 20, interval, clock).register(accounts)
    end = START + timedelta(seconds=5 * interval)
    ticks, tick_lock = iter(range(10 ** 9)), threading.Lock()
    holds: dict[str, list] = defaultdict(list)
    lost: list = []
    go = threading.Barrier(4)
    busy = [0]  # replicas claiming or syncing: the clock waits for them, however slow this machine is

    def tick() -> int:
        with tick_lock:
            return next(ticks)

    def run(owner: str, seed: int) -> None:
        # A lease longer than the whole run: a takeover here would be a bug, not an expiry.
        schedule = AccountSchedule(schedule_collection, owner, LEASE * 20, interval, clock)
        pace = random.Random(seed)
        go.wait()
        while clock() < end:
            with tick_lock:
                busy[0] += 1
            claim = schedule.claim_due()
            if claim is None:
                with tick_lock:
                    busy[0] -= 1
                    if not busy[0]:
                        clock.advance(0.25)
                time.sleep(0.0005)
                continue
            start = tick()
            time.sleep(pace.uniform(0, 0.003))
            finished = tick()
            if not schedule.finish(claim, {"status": "ok"}):
                lost.append(claim)
            holds[claim.account_id].append((start, finished, owner))
            with tick_lock:
                busy[0] -= 1

    threads = [threading.Thread(target=run, args=(f"host-{n}:1:x", n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)

    assert not lost
    assert set(holds) == {account_id for account_id, _ in accounts}
    for account_id, spans in holds.items():
        spans.sort()
        assert all(earlier[1] < later[0] for earlier, later in zip(spans, spans[1:])), (account_id, spans)
        assert 4 <= len(spans) <= 6, (account_id, len(spans))  # once a slot, five intervals
    assert len({owner for spans in holds.values() for _, _, owner in spans}) > 1
    assert schedule_collection.count_documents({"acquired_token": {"$exists": True}}) == 0


# -- status -----------------------------------------------------------------------------------

def test_overview_counts_each_state_and_lists_the_longest_due_first(replica, schedule_collection, clock):
    schedule = replica()
    schedule.register([(f"t{n}", "fp") for n in range(6)])
    # t0 due longest, t1..t3 due, t4 and t5 later.
    for n, offset in enumerate([-50, -40, -30, -20, 10, 100]):
        schedule_collection.update_one({"_id": f"t{n}"}, {"$set": {"dueAt": START + timedelta(seconds=offset)}})
    refused = schedule.claim_due()
    schedule.mark_refused(refused, "401")  # t0
    running = schedule.claim_due()  # t1
    expired = replica("host-dead:9:z").claim_due()  # t2, whose replica dies
    clock.advance(LEASE - 5)
    running_again = schedule.renew(running)
    assert running_again
    schedule.register([(f"t{n}", "fp") for n in range(6) if n != 3])  # t3 retired
    clock.advance(10)  # t2's lease expired; t4 due now

    overview = schedule.overview()
    assert overview["counts"] == {RUNNING: 1, RETIRED: 1, REFUSED: 1, DUE: 2, WAITING: 1}
    assert overview["total"] == 6
    rows = overview["accounts"]
    assert [(row["accountId"], row["state"]) for row in rows] == [
        ("t0", REFUSED), ("t1", RUNNING), ("t2", DUE), ("t4", DUE), ("t5", WAITING)]
    assert rows[0]["refused"]["reason"] == "401" and rows[0]["lastRun"]["status"] == REFUSED
    assert rows[1]["acquired_by"] == "host-a:1:x" and "acquired_token" not in rows[1]
    assert rows[1]["acquired_until"] == START + timedelta(seconds=2 * LEASE - 5)
    assert rows[2]["acquired_by"] == "host-dead:9:z"  # still shown: whose lease expired
    assert [row["accountId"] for row in schedule.overview(limit=2)["accounts"]] == ["t0", "t1"]
    listed = collect(SimpleNamespace(account=None, schedule=schedule))["listed"]  # main.py status: the replica of each lease
    assert [row["runningOn"] for row in listed[:3]] == [None, "host-a:1:x", "host-dead:9:z"]
