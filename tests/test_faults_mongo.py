"""MongoDB failing under the daemon: an error or the process ending at every write of a run, and
two daemons writing at once. The end state must be the one a clean run leaves."""
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import mongomock
import phonenumbers
import pytest
from pymongo.errors import AutoReconnect

from fakes.dataset import generate
from fakes.groq_server import FakeGroq
from fakes.mongo_hooks import WriteTrap
from utils.clock import utcnow
from services.database import CALLS, CONTACTS, CUSTOMERS, PIPELINES, SYNC_RUNS
from tests.conftest import TEST_DB
from tests.test_pipelines import SALES
from tests.faults import (app_for, assert_each_call_analyzed_once, assert_matches_ground_truth, assert_customers_match,
                          customer_call_ids, expected_customers, run_both)

pytestmark = pytest.mark.timeout(90)
CALL_COUNT = 8


@pytest.fixture
def settings(settings):
    # Three small pages; one analysis at a time, so a run's writes come in the same order
    # every time and the sweeps below reach each of them; a batch as big as the data.
    return settings.with_overrides(bolna_page_size=3, llm_concurrency=1, llm_calls_per_run=CALL_COUNT)


@pytest.fixture
def bolna(bolna_server):
    agents, executions = generate(agents=1, per_agent=CALL_COUNT, seed=21, span_days=2)
    return bolna_server(executions, agents)


def snapshot(db) -> dict:
    """What a sync is for, without what legitimately differs between two runs (times, ids)."""
    linked = customer_call_ids(db)
    return {
        "calls": {c["callId"]: (c["status"], c["bolnaUpdatedAt"], c["customerPhone"], c["processed"],
                                (c.get("analysis") or {}).get("status"), (c.get("analysis") or {}).get("tag"))
                  for c in db[CALLS].find()},
        "customers": {c["phone"]: (sorted(linked.get(c["phone"], ())), c["callCount"], c["status"], c.get("name"),
                                   c["lastCallId"])
                      for c in db[CUSTOMERS].find()},
        "contacts": {c["phone"]: (c.get("tag"), c.get("leadStatus"),
                                  sorted(p["callId"] for p in c.get("pastConversations", [])))
                     for c in db[CONTACTS].find()},
        "activities": sorted((a["callId"], a["type"]) for a in db["activities"].find()),
    }


def expire_claims(db) -> None:
    """Time passes beyond every analysis lease, as it does before a restarted daemon's next runs:
    calls a dead process had claimed become claimable again."""
    db[CALLS].update_many({"acquired_until": {"$ne": None}}, {"$set": {"acquired_until": utcnow() - timedelta(seconds=1)}})


def clean_run(settings, bolna, prepare=lambda mongo: None) -> tuple[dict, int]:
    """The reference end state, and how many writes one pass of both jobs makes. `prepare`: what
    the CRM holds before the daemon starts."""
    trap, mongo = WriteTrap(), mongomock.MongoClient()
    prepare(mongo)
    app = app_for(settings, mongo, bolna, trap)
    before = trap.writes
    assert {r["status"] for r in run_both(app).values()} == {"ok"}
    return snapshot(app.db), trap.writes - before


def each_write(writes: int) -> Iterator[tuple[int, WriteTrap]]:
    """A fresh trap for each write of a run to be failed at (0, 1, 2...), which the loop's body
    arms once its app is built. `writes`: the count of one clean run, which another run may not
    repeat: the read-ahead looks the next page's calls up while this page is written, and a legacy
    merge on this page applies the links of later pages' calls, so the lookup finds them done
    (skipped, 19 writes) or not yet (written again, 22), by timing alone. So the sweep goes on
    until a trap armed at or past `writes` does not fire: each write of the runs that went
    furthest was failed, and a shorter run is a clean run, checked as the others."""
    for at in itertools.count():
        trap = WriteTrap()
        yield at, trap
        if trap.fired_at is None and at >= writes:
            return
        assert at < 2 * writes, f"write {at} failed still, of a run counted at {writes} writes"


def crash(run: Callable[[], object], trap: WriteTrap) -> None:
    """`run()`, ended by the process dying at the trap's write if it reaches it: nothing in the
    daemon may catch that (a KeyboardInterrupt, a BaseException)."""
    try:
        run()
    except KeyboardInterrupt:
        assert trap.fired_at, "a KeyboardInterrupt not the trap's"
    else:
        assert trap.fired_at is None, f"the crash at {trap.fired_at} was caught"


def with_pipeline(mongo) -> None:
    """A sales pipeline for every agent: each analysis also places the contact in a stage, and
    audits it (a `stage_change` activity)."""
    mongo[TEST_DB][PIPELINES].insert_one(SALES)


@pytest.mark.parametrize("prepare", [lambda mongo: None, with_pipeline], ids=["no pipeline", "a pipeline"])
def test_the_process_ending_at_any_write_then_restarting_ends_as_a_clean_run(settings, bolna, prepare):
    # Every decision sure enough to move a contact (the offline heuristic's confidence is low).
    settings = settings.with_overrides(auto_assign_min_confidence=0)
    reference, writes = clean_run(settings, bolna, prepare)
    if prepare is with_pipeline:
        assert ("stage_change" in {kind for _call, kind in reference["activities"]}), "no stage was audited"
    differs = []
    for crash_at, trap in each_write(writes):
        mongo = mongomock.MongoClient()
        prepare(mongo)
        app = app_for(settings, mongo, bolna, trap)
        trap.arm(crash_at, KeyboardInterrupt)
        crash(lambda: run_both(app), trap)

        restarted = app_for(settings, mongo, bolna)  # a fresh Runtime on the same data: a restart
        db = restarted.db
        assert db[SYNC_RUNS].count_documents({"status": "running"}) == 0, "the dead run is not marked"
        run_both(restarted)
        expire_claims(db)
        restarted.run_job("call_processor")
        assert_matches_ground_truth(db, bolna)
        if snapshot(db) != reference:
            differs.append(f"#{crash_at} {trap.fired_at}")
    assert differs == [], f"state after a crash at these of {writes} writes differs from a clean run"


def test_a_mongodb_error_at_any_write_fails_cleanly_and_the_next_runs_complete(settings, bolna):
    reference, writes = clean_run(settings, bolna)
    differs = []
    for fail_at, trap in each_write(writes):
        app = app_for(settings, mongomock.MongoClient(), bolna, trap)
        trap.arm(fail_at, lambda: AutoReconnect("connection reset by the server"))
        records = run_both(app)
        trap.disarm()  # a run that made no write `fail_at` (a sweep's last) fails none of the next
        # Whichever write failed, a run says so: the run (failed) or the call analyzed (partial);
        # only a run's closing record update may fail after its work is done (it is logged).
        if trap.fired_at not in (None, "sync_runs.update_one"):
            assert any("AutoReconnect" in e["message"] for r in records.values() for e in r["errors"]), \
                f"write {fail_at} ({trap.fired_at}) failed silently"

        run_both(app)  # the same daemon, on its next tick
        expire_claims(app.db)
        app.run_job("call_processor")
        assert_matches_ground_truth(app.db, bolna)
        if snapshot(app.db) != reference:
            differs.append(f"#{fail_at} {trap.fired_at}")
    assert differs == [], f"state after an error at these of {writes} writes differs from a clean run"


def test_two_daemons_at_once_store_and_analyze_everything_once(settings, mongo, bolna_server):
    agents, executions = generate(agents=2, per_agent=30, seed=23, span_days=2, repeat_ratio=0.5)
    bolna = bolna_server(executions, agents)
    with FakeGroq(latency=0.02) as groq:
        both = settings.with_overrides(groq_api_keys=("key-1",), groq_base_url=groq.base_url,
                                       bolna_page_size=10, llm_concurrency=3, llm_calls_per_run=60)
        daemons = [app_for(both, mongo, bolna) for _ in range(2)]
        start = threading.Barrier(len(daemons))
        records = []

        def daemon(app):
            start.wait()
            records.extend(run_both(app).values())

        threads = [threading.Thread(target=daemon, args=(app,)) for app in daemons]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        db = daemons[0].db
        assert {r["status"] for r in records} == {"ok"}
        assert_matches_ground_truth(db, bolna)
        assert_each_call_analyzed_once(db)
        # Each analyzed call's transcript went to the LLM once (two calls may say the same words).
        sent = Counter(request.transcript for request in groq.recorded())
        assert sent == Counter(call["transcript"].strip() for call in db[CALLS].find({"analysis.status": "ok"}))



@pytest.fixture
def legacy_bolna(bolna_server):
    agents, executions = generate(agents=1, per_agent=CALL_COUNT, seed=21, span_days=2, repeat_ratio=0.6)
    return bolna_server(executions, agents)


def legacy_customer(bolna):
    """What the CRM holds before the daemon starts: the customer of the number Bolna has the most
    calls from, stored by an old version under its national spelling (`080 4567 1234`) and
    counting its calls in a `callIds` array. Returns it as a `prepare`, with the number's key,
    that spelling and its calls."""
    key, call_ids = max(expected_customers(bolna.ground_truth(), "IN").items(), key=lambda item: len(item[1]))
    assert len(call_ids) > 1
    spelling = phonenumbers.format_number(phonenumbers.parse(key), phonenumbers.PhoneNumberFormat.NATIONAL)
    assert spelling != key

    def prepare(mongo):
        mongo[TEST_DB][CUSTOMERS].insert_one({
            "phone": spelling, "callIds": sorted(call_ids), "callCount": len(call_ids), "status": "No Answer",
            "name": "Old Name", "lastCallAt": utcnow() - timedelta(days=30), "lastCallId": min(call_ids),
            "createdAt": utcnow() - timedelta(days=60)})
    return prepare, key, spelling, len(call_ids)


def test_the_process_ending_at_any_write_of_a_legacy_merge_then_restarting_ends_as_a_clean_run(settings, legacy_bolna):
    """A crash at any write of the first sync, which merges a legacy record (issue 23, found by the
    model test): after a restart the merged customer must be under the normalized number, counted
    exactly, with no record left under the old spelling: as a clean run leaves it."""
    bolna = legacy_bolna
    prepare, key, spelling, legacy_calls = legacy_customer(bolna)
    sync_writes, mongo = WriteTrap(), mongomock.MongoClient()
    prepare(mongo)
    reference_app = app_for(settings, mongo, bolna, sync_writes)
    before = sync_writes.writes
    assert reference_app.run_job("crm_sync")["status"] == "ok"
    writes = sync_writes.writes - before
    reference = snapshot(reference_app.db)
    assert reference["customers"][key][1] == legacy_calls and spelling not in reference["customers"]
    differs = []
    for crash_at, trap in each_write(writes):
        mongo = mongomock.MongoClient()
        prepare(mongo)
        app = app_for(settings, mongo, bolna, trap)
        trap.arm(crash_at, KeyboardInterrupt)
        crash(lambda: app.run_job("crm_sync"), trap)

        restarted = app_for(settings, mongo, bolna)
        restarted.run_job("crm_sync")
        db = restarted.db
        try:
            assert_customers_match(db, bolna.ground_truth(), "IN")  # one per number, callCount exact
            assert snapshot(db) == reference
        except AssertionError as exc:
            differs.append(f"#{crash_at} {trap.fired_at}: {str(exc).splitlines()[0]}")
    assert differs == [], f"state after a crash at these of {writes} writes differs from a clean run: {differs}"
