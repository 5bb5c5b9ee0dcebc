"""Replicas whose clocks disagree share one analysis queue: leases are set and compared by the
database server's clock, so a replica running fast cannot take a live claim. Runs on a real server
(the test run's wire server, or MONGODB_URI): an in-process MongoDB has no clock of its own."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.analyzer.claims import CallQueue
from services.database import CALLS, ensure_indexes
from services.lease import ServerClock
from tests.conftest import TEST_DB
from tests.real_mongo import mongo  # noqa: F401 - the test database on the server, dropped after
from utils.clock import utcnow

pytestmark = pytest.mark.timeout(60)
FAST = timedelta(minutes=4)


def queue(db, owner: str, skew: timedelta, *, server_time: bool) -> CallQueue:
    local = lambda: utcnow() + skew  # noqa: E731 - this replica's clock
    clock = ServerClock(db, local=local).now if server_time else local
    return CallQueue(db[CALLS], owner, lease_seconds=60, clock=clock)


def add_call(db, call_id: str) -> None:
    db[CALLS].insert_one({"callId": call_id, "terminal": True, "processed": False, "attempts": 0,
                          "callAt": utcnow() - timedelta(hours=1), "transcript": "user: hello there, a flat please"})


@pytest.mark.parametrize("server_time", [True, False], ids=["server clock", "replica clocks"])
def test_a_replica_four_minutes_fast_cannot_take_a_live_claim(mongo, server_time):
    db = mongo[TEST_DB]
    ensure_indexes(db)
    add_call(db, "c1")
    holder = queue(db, "replica-a", timedelta(0), server_time=server_time)
    fast = queue(db, "replica-b", FAST, server_time=server_time)
    claim = holder.claim_next()
    assert claim is not None
    taken = fast.claim_next()
    if server_time:
        assert taken is None  # the lease is live by the one clock both read
        assert holder.finish(claim, {"status": "ok"})
    else:  # what each replica's own clock did: the fast one saw the lease as expired
        assert taken is not None and not holder.finish(claim, {"status": "ok"})


def test_the_server_clock_follows_the_server_not_this_machine(mongo):
    db = mongo[TEST_DB]
    clock = ServerClock(db, local=lambda: utcnow() + FAST)
    assert abs(clock.now() - utcnow()) < timedelta(seconds=30)
