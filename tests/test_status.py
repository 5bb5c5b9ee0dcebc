"""`main.py status`: what the run records and collections say, as JSON and as a table."""
import json
import os
import socket
import threading
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect

from fakes.bolna_server import FakeBolna
from utils.clock import utcnow
from services.database import CALLS, CONTACTS, SYNC_RUNS, WEBHOOK_DELIVERIES, WEBHOOK_INBOX
from services.webhooks import DeliveryTally, Inbox
from tests.helpers import AGENT, build_app, execution
from services.analyzer.claims import CallQueue
from services.run_records import RunRecords
from worker.status import StatusReader

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bolna(settings):
    calls = [execution(f"+9198765432{n:02d}", minutes_ago=10 + n, call_id=f"c-{n}") for n in range(6)]
    calls.append(execution("+919811100000", status="in-progress", call_id="pending"))
    with FakeBolna([AGENT], calls, api_key=settings.bolna_api_key) as server:
        yield server


def show_status(db, settings, as_json: bool) -> int:
    return StatusReader(db, settings.mongodb_db, RunRecords(db), CallQueue(db[CALLS], "status:1:a", 60),
                        Inbox(db[WEBHOOK_INBOX], "status:1:a", 60), DeliveryTally(db[WEBHOOK_DELIVERIES])).show(as_json)


def status_json(db, settings, capsys) -> dict:
    assert show_status(db, settings, as_json=True) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object on one line
    return json.loads(out)


def test_status_json_reflects_the_run_records(settings, mongo, db, bolna, capsys):
    app = build_app(settings.with_overrides(llm_batch_limit=4), mongo, bolna)
    crm = app.run_job("crm_sync")
    calls = app.run_job("call_processor")

    status = status_json(db, settings, capsys)

    for job, record in (("crm_sync", crm), ("call_processor", calls)):
        last = status["jobs"][job]["lastRun"]
        assert last["id"] == record["_id"] and last["status"] == record["status"] == "ok"
        assert last["counts"] == record["counts"]
        assert status["jobs"][job]["lastSuccessAt"].startswith(record["finishedAt"].isoformat()[:19])
        assert 0 <= status["jobs"][job]["lastSuccessAgeSeconds"] < 60
    assert status["totals"] == {"customers": 7 - 1, "calls": 7, "contacts": 4}
    # 6 terminal calls, 4 analyzed; the in-progress call is not waiting for analysis yet.
    assert status["queueDepth"] == db[CALLS].count_documents({"processed": False, "terminal": True}) == 2
    tags = {}
    for contact in db[CONTACTS].find():
        tags[contact["tag"]] = tags.get(contact["tag"], 0) + 1
    assert status["contactsByTag"] == tags and sum(tags.values()) == 4
    assert status["contactsByLeadStatus"] == {
        value: db[CONTACTS].count_documents({"leadStatus": value}) for value in db[CONTACTS].distinct("leadStatus")}
    # The heuristic analyzed them: no tokens, no cost.
    assert status["llmUsage24h"] == {"analyzed": 4, "failed": 0, "promptTokens": 0, "completionTokens": 0,
                                     "costUsd": 0, "unpricedAnalyses": 0}


def test_status_sums_llm_tokens_and_cost_over_the_last_day(settings, db, capsys):
    runs = db[SYNC_RUNS]
    now = utcnow()
    for hours_ago, cost in ((1, 0.25), (5, 0.5), (30, 8.0)):  # the last is older than a day
        runs.insert_one({"_id": f"r{hours_ago}", "job": "call_processor", "status": "ok",
                         "startedAt": now - timedelta(hours=hours_ago), "finishedAt": now,
                         "counts": {"analyzed": 10, "promptTokens": 1000, "completionTokens": 200, "costUsd": cost}})
    status = status_json(db, settings, capsys)
    assert status["llmUsage24h"] == {"analyzed": 20, "failed": 0, "promptTokens": 2000, "completionTokens": 400,
                                     "costUsd": 0.75, "unpricedAnalyses": 0}
    show_status(db, settings, as_json=False)
    assert ("LLM, last 24 h: 20 analyzed, 0 failed, 2000 prompt + 400 completion tokens, estimated cost $0.7500"
            in capsys.readouterr().out)


def test_a_failed_run_is_the_last_run_but_not_the_last_success(settings, mongo, db, bolna, capsys):
    app = build_app(settings, mongo, bolna)
    ok = app.run_job("crm_sync")
    broken = build_app(settings.with_overrides(bolna_api_key="wrong-key"), mongo, bolna)
    failed = broken.run_job("crm_sync")
    assert failed["status"] == "failed"

    job = status_json(db, settings, capsys)["jobs"]["crm_sync"]

    assert job["lastRun"]["id"] == failed["_id"] and job["lastRun"]["status"] == "failed"
    assert job["lastRun"]["errorCount"] == 1
    assert job["lastSuccessAt"].startswith(ok["finishedAt"].isoformat()[:19])
    assert status_json(db, settings, capsys)["jobs"]["call_processor"] == {
        "lastRun": None, "lastSuccessAt": None, "lastSuccessAgeSeconds": None}


def test_age_of_the_last_success_counts_from_when_it_finished(settings, db, capsys):
    finished = utcnow() - timedelta(hours=2)
    db[SYNC_RUNS].insert_many([
        {"_id": "old-ok", "job": "crm_sync", "status": "ok", "startedAt": finished - timedelta(minutes=1),
         "finishedAt": finished, "counts": {}, "errorCount": 0},
        {"_id": "newer-abandoned", "job": "crm_sync", "status": "abandoned",
         "startedAt": finished + timedelta(minutes=30), "finishedAt": finished + timedelta(minutes=40)},
    ])

    job = status_json(db, settings, capsys)["jobs"]["crm_sync"]

    assert job["lastRun"]["id"] == "newer-abandoned"
    assert abs(job["lastSuccessAgeSeconds"] - 7200) < 60


def test_table_names_each_job_its_last_status_and_the_counts(settings, mongo, db, bolna, capsys):
    app = build_app(settings.with_overrides(llm_batch_limit=4), mongo, bolna)
    app.run_job("call_processor")

    assert show_status(db, settings, as_json=False) == 0
    out = capsys.readouterr().out

    lines = out.splitlines()
    assert any(line.split()[:2] == ["call_processor", "ok"] for line in lines)
    assert any(line.split()[:3] == ["crm_sync", "never", "run"] for line in lines)
    assert "calls 7" in out and "waiting for analysis 2" in out
    for contact_tag in db[CONTACTS].distinct("tag"):
        assert any(line.split()[:1] == [contact_tag] for line in lines)


def test_a_run_whose_final_write_was_lost_in_an_outage_is_settled_once_mongodb_is_back(settings, mongo, db, bolna):
    away = threading.Event()

    def outage(_collection: str, _method: str) -> None:
        if away.is_set():
            raise AutoReconnect("127.0.0.1:27017: [Errno 111] Connection refused")

    app = build_app(settings, mongo, bolna, hook=outage)
    bolna.on_answer(r"/executions$", away.set)  # MongoDB goes away while the run reads its first page
    lost = app.run_job("crm_sync")
    assert lost["status"] == "failed"
    assert db[SYNC_RUNS].find_one({"_id": lost["_id"]})["status"] == "running"  # its final write was lost

    away.clear()  # MongoDB is back: the next run writes the lost record first
    app.run_job("call_processor")
    stored = db[SYNC_RUNS].find_one({"_id": lost["_id"]})
    assert stored["status"] == "failed" and stored["finishedAt"] == lost["finishedAt"]
    assert stored["errors"] == lost["errors"] and len(app.runs.unsettled) == 0
    assert app.status.collect()["jobs"]["crm_sync"]["lastRun"]["status"] == "failed"


def test_status_shows_a_run_left_running_by_a_dead_process_as_abandoned(settings, db, capsys):
    started = utcnow() - timedelta(minutes=2)
    db[SYNC_RUNS].insert_one({"_id": "dead", "job": "crm_sync", "status": "running", "startedAt": started,
                              "host": socket.gethostname(), "pid": 2 ** 22 + 1, "counts": {}})
    db[SYNC_RUNS].insert_one({"_id": "old", "job": "call_processor", "status": "running",
                              "startedAt": utcnow() - timedelta(hours=2), "host": "elsewhere", "pid": 7, "counts": {}})
    reader = StatusReader(db, settings.mongodb_db, RunRecords(db), CallQueue(db[CALLS], "status:1:a", 60),
                          Inbox(db[WEBHOOK_INBOX], "status:1:a", 60), DeliveryTally(db[WEBHOOK_DELIVERIES]))
    jobs = reader.collect()["jobs"]
    assert jobs["crm_sync"]["lastRun"]["status"] == "abandoned"
    assert jobs["call_processor"]["lastRun"]["status"] == "abandoned"
    db[SYNC_RUNS].update_one({"_id": "dead"}, {"$set": {"pid": os.getppid()}})  # a live process's own run
    assert reader.collect()["jobs"]["crm_sync"]["lastRun"]["status"] == "running"
