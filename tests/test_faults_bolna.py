"""Bolna misbehaving: outages and timeouts mid-pagination, 429 storms, malformed pages, duplicates
across pages, calls that change between runs. Every scenario ends in the ground-truth check."""
import time
from datetime import datetime, timedelta, timezone

import pytest

from fakes.dataset import generate, iso
from services.database import SYNC_STATE
from tests.faults import app_for, assert_calls_match, assert_matches_ground_truth, run_both
from tests.helpers import execution

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def paged_settings(settings):
    # Timeouts take 0.25 s; pages of 20 make three pages of the calls below.
    return settings.with_overrides(http_timeout_seconds=0.25, bolna_page_size=20)


@pytest.fixture
def data():
    return generate(agents=2, per_agent=50, seed=11, span_days=3)


def first_agent_listing(agents) -> str:
    return rf"/v2/agent/{agents[0]['id']}/executions$"


def page_two_fails(bolna, agents, times, **fault):
    bolna.inject(first_agent_listing(agents), status=200, times=1)  # page 1 passes
    bolna.inject(first_agent_listing(agents), times=times, **fault)


FAILURES = {
    "500": {"status": 500},
    "502": {"status": 502},
    "503": {"status": 503},
    "timeout": {"status": 200, "delay": 0.5},  # longer than the client timeout (paged_settings)
    "dropped connection": {"drop_connection": True},
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_failure_mid_pagination_is_retried(paged_settings, mongo, bolna_server, data, failure):
    bolna = bolna_server(*reversed(data))
    page_two_fails(bolna, data[0], paged_settings.http_max_attempts - 1, **failure)
    app = app_for(paged_settings, mongo, bolna)
    assert {record["status"] for record in run_both(app).values()} == {"ok"}
    assert_matches_ground_truth(app.db, bolna)


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_outage_mid_pagination_holds_the_cursor_and_the_next_run_completes(paged_settings, mongo, bolna_server, data, failure):
    bolna = bolna_server(*reversed(data))
    broken_agent, healthy_agent = (agent["id"] for agent in data[0])
    page_two_fails(bolna, data[0], paged_settings.http_max_attempts, **failure)
    app = app_for(paged_settings, mongo, bolna)
    record = app.run_job("crm_sync")
    assert record["status"] == "partial"
    assert [e["agentId"] for e in record["errors"]] == [broken_agent]
    assert record["agents"][broken_agent]["fetched"] == 20  # page 1 was written, pages 2-3 never came
    cursors = {state["agentId"] for state in app.db[SYNC_STATE].find({"job": "crm_sync"})}
    assert cursors == {healthy_agent}  # the broken agent's window was not completed

    assert app.run_job("call_processor")["status"] == "ok"
    assert app.run_job("crm_sync")["status"] == "ok"
    assert_matches_ground_truth(app.db, bolna)


def test_429_storm_waits_as_long_as_the_server_asks(paged_settings, mongo, bolna_server, data):
    bolna = bolna_server(*reversed(data))
    bolna.inject(".", status=429, retry_after=0.2, times=2)  # the first two requests of the run
    app = app_for(paged_settings, mongo, bolna)
    started = time.monotonic()
    assert app.run_job("crm_sync")["status"] == "ok"
    assert time.monotonic() - started >= 0.4  # not the 0.01 s backoff of the paged_settings
    assert [r.status for r in bolna.requests[:3]] == [429, 429, 200]


def test_429_storm_longer_than_the_retries_is_partial_and_the_next_run_completes(paged_settings, mongo, bolna_server, data):
    bolna = bolna_server(*reversed(data))
    page_two_fails(bolna, data[0], paged_settings.http_max_attempts, status=429, retry_after=0.05)
    app = app_for(paged_settings, mongo, bolna)
    assert app.run_job("call_processor")["status"] == "partial"
    assert app.run_job("crm_sync")["status"] == "ok"  # the storm is over
    assert app.run_job("call_processor")["status"] == "ok"
    assert_matches_ground_truth(app.db, bolna)


UNREADABLE = {
    "html error page": {"body": b"<html><body>502 Bad Gateway</body></html>"},
    "truncated": {"truncate": True},
}
WRONG_SHAPE = {"body": b'{"data": "temporarily unavailable", "has_more": false}'}


@pytest.mark.parametrize("fault", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_page_once_is_retried(paged_settings, mongo, bolna_server, data, fault):
    bolna = bolna_server(*reversed(data))
    page_two_fails(bolna, data[0], 1, **fault)
    app = app_for(paged_settings, mongo, bolna)
    assert {record["status"] for record in run_both(app).values()} == {"ok"}
    assert_matches_ground_truth(app.db, bolna)


@pytest.mark.parametrize("fault, requests", [(fault, 3) for fault in UNREADABLE.values()] + [(WRONG_SHAPE, 1)],
                         ids=[*UNREADABLE, "wrong shape"])
def test_malformed_page_is_partial_and_the_next_run_completes(paged_settings, mongo, bolna_server, data, fault, requests):
    """Unreadable bodies are retried, to the last attempt; JSON of the wrong shape is not (a
    server that answers 200 with it will answer the same again)."""
    assert paged_settings.http_max_attempts == 3
    bolna = bolna_server(*reversed(data))
    page_two_fails(bolna, data[0], requests, **fault)
    app = app_for(paged_settings, mongo, bolna)
    assert app.run_job("call_processor")["status"] == "partial"
    assert app.db[SYNC_STATE].count_documents({"agentId": data[0][0]["id"], "job": "call_processor"}) == 0
    assert app.run_job("call_processor")["status"] == "ok"
    app.run_job("crm_sync")
    assert_matches_ground_truth(app.db, bolna)


def test_a_call_appearing_mid_listing_duplicates_one_across_pages_and_nothing_is_lost(
        paged_settings, mongo, bolna_server, data):
    """A call that shows up while the pages are read (Bolna lists newest first) shifts every later
    page by one: the last call of page 1 comes again on page 2. It is stored once; the new call,
    above the page already read, is picked up by the next run's overlap."""
    agents, executions = data
    paged_settings = paged_settings.with_overrides(backfill_days=6)  # one 7-day window holds every call
    bolna = bolna_server(executions, agents)
    run_started = datetime.now(timezone.utc)
    late = {**execution("+91 99000 11223", agent_id=agents[0]["id"], call_id="late-call"),
            "created_at": iso(run_started - timedelta(seconds=1))}
    bolna.on_answer(first_agent_listing(agents), lambda: bolna.add_execution(late))
    app = app_for(paged_settings, mongo, bolna)
    record = app.run_job("call_processor")
    assert record["status"] == "ok"
    assert record["agents"][agents[0]["id"]]["fetched"] == 51  # one call listed twice
    truth = bolna.ground_truth()
    del truth["late-call"]
    assert_calls_match(app.db, truth)

    app.run_job("crm_sync")
    app.run_job("call_processor")
    assert_matches_ground_truth(app.db, bolna)


def test_calls_that_change_between_runs_end_in_their_latest_version(paged_settings, mongo, bolna_server, data):
    agents, executions = data
    agent = agents[0]["id"]
    live = [execution(f"+91 98111 3333{n}", call_id=f"live-{n}", agent_id=agent, status="in-progress",
                      minutes_ago=20 + n) for n in range(3)]
    recent = execution(call_id="recent", agent_id=agent, minutes_ago=5)
    bolna = bolna_server(executions + live + [recent], agents)
    app = app_for(paged_settings, mongo, bolna)
    run_both(app)
    assert_matches_ground_truth(app.db, bolna)

    # Between runs: the live calls end (one unanswered), the recent call's record is completed
    # late (cost and extraction filled in), and new calls arrive.
    later = iso(datetime.now(timezone.utc))
    for n, call in enumerate(live):
        status = "no-answer" if n == 0 else "completed"
        bolna.update_execution(call["id"], status=status, updated_at=later, conversation_duration=0.0 if n == 0 else 30.0,
                               transcript=None if n == 0 else "assistant: hi\nuser: book it for Friday please\n",
                               extracted_data={"name": f"Caller {n}", "appointment_booked": n == 1})
    bolna.update_execution("recent", total_cost=7.25, extracted_data={"name": "Meera", "email": "m@x.in"},
                           updated_at=later)
    for n in range(3):
        bolna.add_execution(execution(f"+91 98111 2222{n}", call_id=f"new-{n}", agent_id=agent, minutes_ago=1))
    assert {record["status"] for record in run_both(app).values()} == {"ok"}
    assert_matches_ground_truth(app.db, bolna)
    live_customer = app.db["customer_calls"].find_one({"_id": "live-1"})["phone"]
    assert app.db["customers"].find_one({"phone": live_customer})["status"] == "Booked"
    recent_call = app.db["calls"].find_one({"callId": "recent"})
    assert (recent_call["costCents"], recent_call["extracted"]["email"]) == (7.25, "m@x.in")
