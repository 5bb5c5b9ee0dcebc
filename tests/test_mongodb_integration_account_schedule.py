"""The account schedule's tests again on a real server (tests.real_mongo): claims must be atomic
through the server's find_one_and_update, not through mongomock behind a lock; and the schedule's
queries are answered from its indexes."""
from datetime import timedelta

from pymongo import MongoClient

from services.database import SCHEDULE_INDEXES
from services.accounts.schedule import AccountSchedule
from tests.conftest import TEST_DB
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_query_plans import QueryRecorder, by_id, plan_stages
from tests.test_account_schedule import *  # noqa: F401,F403 - collected again, on the server
from tests.test_account_schedule import COLLECTION, INTERVAL, LEASE, START, FakeClock

# Read whole on purpose (services/accounts/schedule.py): register's diff, status's counts and rows.
WHOLE_COLLECTION_READS = {("find", "{}"), ("aggregate", "{}"), ("aggregate", '{"retiredAt": "NoneType"}')}


def test_the_schedules_queries_are_answered_from_its_indexes(mongo, mongodb_uri):
    """Every command of a replica's round (claim, renew, finish, release, mark refused, a
    register that rekeys and retires, status), recorded off the wire and explained."""
    recorder = QueryRecorder()
    client = MongoClient(mongodb_uri, tz_aware=False, event_listeners=[recorder])
    try:
        collection = client[TEST_DB][COLLECTION]
        collection.create_indexes(SCHEDULE_INDEXES)
        clock = FakeClock()
        schedule = AccountSchedule(collection, "host-a:1:x", LEASE, INTERVAL, clock)
        schedule.register([(f"t{n}", "fp") for n in range(50)])
        clock.advance(INTERVAL)
        claims = [schedule.claim_due() for _ in range(3)]
        assert schedule.renew(claims[0]) and schedule.finish(claims[0], {"status": "ok"})
        assert schedule.release(claims[1]) and schedule.mark_refused(claims[2], "401")
        schedule.register([(f"t{n}", "fp") for n in range(1, 50) if n != 3] + [("t3", "fp-2")])
        schedule.overview()

        plans = {(command, shape): plan_stages(client[TEST_DB], COLLECTION, query["filter"], query["sort"],
                                               query["hint"])
                 for (command, _, shape), query in recorder.queries.items()}
        [claim] = [stages for (command, _), stages in plans.items() if command == "findAndModify"]
        assert "IXSCAN(active_dueAt)" in claim, claim
        # Renewal, finish, release, refusal and register's guarded writes: by `_id` (answered from `_id_`).
        selected_by_id = {(command, shape) for (command, _, shape), query in recorder.queries.items()
                          if by_id(query["filter"])}
        assert len([shape for _, shape in selected_by_id if '"acquired_token"' in shape]) == 2, selected_by_id
        scans = [f"{command} {shape}: {' <- '.join(stages)}" for (command, shape), stages in plans.items()
                 if "COLLSCAN" in stages and (command, shape) not in WHOLE_COLLECTION_READS | selected_by_id]
        assert not scans, "collection scans:\n" + "\n".join(scans)
    finally:
        client.close()


def test_a_claim_scans_only_active_due_accounts(mongo, mongodb_uri):
    """Refused and retired accounts stay overdue for as long as they are skipped; the claim must
    not walk them: `active` leads the index."""
    collection = mongo[TEST_DB][COLLECTION]
    collection.create_indexes(SCHEDULE_INDEXES)
    clock = FakeClock()
    schedule = AccountSchedule(collection, "host-a:1:x", LEASE, INTERVAL, clock)
    schedule.register([(f"t{n:03d}", "fp") for n in range(200)])
    collection.update_many({"_id": {"$lt": "t150"}}, {"$set": {"active": False, "retiredAt": START}})
    collection.update_one({"_id": "t199"}, {"$set": {"dueAt": START - timedelta(hours=1)}})
    clock.advance(INTERVAL)
    now = clock()
    explained = mongo[TEST_DB].command("explain", {
        "find": COLLECTION, "filter": {"active": True, "dueAt": {"$lte": now}, "$or": [
            {"acquired_until": None}, {"acquired_until": {"$lte": now}}]},
        "sort": {"dueAt": 1}, "hint": {"active": 1, "dueAt": 1}, "limit": 1}, verbosity="executionStats")
    # The 50 active accounts at most (they are all due; the wire server's explain ignores the
    # limit), never the 150 inactive ones before them in `dueAt` order.
    assert explained["executionStats"]["totalKeysExamined"] <= 50, explained["executionStats"]
    assert schedule.claim_due().account_id == "t199"
