"""Faults a real deployment meets in the sync: clocks that disagree, a page the database refuses,
a call whose full record keeps failing. Each ends in the ground-truth check: nothing lost,
nothing doubled, and the run went on."""
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from pymongo.errors import OperationFailure

from models.execution import parse_time
from services.database import CALLS, CUSTOMERS, SYNC_RUNS, SYNC_STATE
from services.sync_state import SyncState, WindowProgress
from tests.faults import app_for, assert_matches_ground_truth, run_both
from tests.helpers import execution
from utils.clock import utcnow
from worker.app import JOB_NAMES

pytestmark = pytest.mark.timeout(60)
AGENTS = [{"id": "agent-1", "agent_name": "Sales"}, {"id": "agent-2", "agent_name": "Support"}]


def test_a_call_created_after_a_run_is_stored_when_the_daemons_clock_is_ahead(settings, mongo, bolna_server):
    # The daemon's clock 20 minutes ahead of Bolna's: more than SYNC_OVERLAP_MINUTES (10).
    bolna = bolna_server([execution(call_id="before", minutes_ago=60)], AGENTS[:1],
                         clock_offset=timedelta(minutes=-20))
    app = app_for(settings, mongo, bolna)
    run_both(app)
    # Two minutes later by Bolna's clock (the daemon's still 18 ahead), a call made a minute ago.
    bolna.clock_offset += timedelta(minutes=2)
    bolna.add_execution(execution(call_id="after", minutes_ago=19))
    assert {r["status"] for r in run_both(app).values()} == {"ok"}
    assert_matches_ground_truth(app.db, bolna)


def test_a_call_made_while_the_last_window_is_paged_is_stored_when_the_daemons_clock_is_ahead(
        settings, mongo, bolna_server):
    # Ahead by 20 minutes, no overlap to hide it, and the listing is the run's first request (the
    # agent is configured), so the window ends by the daemon's clock, past Bolna's present.
    bolna = bolna_server([execution(f"+9198765432{n:02d}", call_id=f"old-{n}", minutes_ago=30 + n)
                          for n in range(3)], AGENTS[:1], clock_offset=timedelta(minutes=-20))
    settings = settings.with_overrides(bolna_page_size=1, sync_overlap_minutes=0, bolna_agent_ids=("agent-1",),
                                       backfill_days=1)  # one window

    def a_call_is_made():
        # Just after page 1 was read (the top of the listing, newest first); the next pages come
        # more than a second later, so they are served after the call was made, by whole seconds.
        bolna.add_execution(execution("+919811100000", call_id="made-meanwhile", minutes_ago=20))
        bolna.inject(r"/executions$", status=200, delay=1.2)

    bolna.on_answer(r"/v2/agent/agent-1/executions$", a_call_is_made)
    app = app_for(settings, mongo, bolna)
    first = run_both(app)
    assert first["crm_sync"]["counts"]["fetched"] == 4  # the call on no page, "old-0" on pages 1 and 2
    run_both(app)
    assert_matches_ground_truth(app.db, bolna)


def test_a_call_is_stored_by_the_next_run_when_the_daemons_clock_is_behind(settings, mongo, bolna_server):
    # Bolna's clock 20 minutes ahead; the agent configured, so a run's first request is its listing.
    bolna = bolna_server([execution(call_id="before", minutes_ago=60)], AGENTS[:1],
                         clock_offset=timedelta(minutes=20))
    settings = settings.with_overrides(bolna_agent_ids=("agent-1",))
    app = app_for(settings, mongo, bolna)
    run_both(app)
    bolna.add_execution(execution("+919811100000", call_id="just-made", minutes_ago=-19))  # a minute ago, by Bolna
    run_both(app)
    assert_matches_ground_truth(app.db, bolna)

    # Restarted five minutes later by Bolna's clock: a client that has not yet heard Bolna's time.
    bolna.clock_offset += timedelta(minutes=5)
    bolna.add_execution(execution("+919811100001", call_id="made-after-restart", minutes_ago=-24))
    run_both(app_for(settings, mongo, bolna))
    assert_matches_ground_truth(app.db, bolna)


def test_a_young_unfinished_call_holds_the_cursor_across_a_catch_up_of_two_windows(settings, mongo, bolna_server):
    ringing = execution(call_id="ringing", minutes_ago=120, status="ringing")
    bolna = bolna_server([ringing, execution("+919811100000", call_id="later", minutes_ago=30)], AGENTS[:1])
    app = app_for(settings, mongo, bolna)
    # The daemon was down for a week and an hour: the catch-up reads two windows, the ringing
    # call (two hours old) in the first, the later call in the second.
    down_since = utcnow() - timedelta(days=7, hours=1)
    for job in JOB_NAMES:
        state = SyncState(app.db[SYNC_STATE], job, down_since)
        state.window_done("agent-1", down_since, WindowProgress())
        state.save()
    run_both(app)
    assert app.db[CALLS].find_one({"callId": "ringing"})["status"] == "ringing"
    bolna.update_execution("ringing", status="completed", conversation_duration=40.0,
                           transcript="assistant: Hello\nuser: Call me tomorrow\n", extracted_data={"name": "Asha"})
    run_both(app)
    assert_matches_ground_truth(app.db, bolna)


class CrashAt:
    """A MongoDB hook: once armed, the process ends (KeyboardInterrupt, which nothing in the daemon
    catches) at the first write of one kind."""

    def __init__(self, collection: str, method: str):
        self.target, self.armed = (collection, method), False

    def __call__(self, collection: str, method: str) -> None:
        if (collection, method) == self.target and self.armed:
            self.armed = False
            raise KeyboardInterrupt


@pytest.mark.parametrize("stored_first, write",
                         [(True, (SYNC_RUNS, "insert_one")), (False, (CUSTOMERS, "bulk_write"))],
                         ids=["the call stored, then at its first write", "after its links"])
def test_a_first_sync_cut_off_by_a_crash_still_reads_its_backfill_when_restarted_hours_later(
        settings, mongo, bolna_server, stored_first, write):
    # Near the far end of the first sync's backfill (8 days): 7.8 days old when the daemon starts.
    bolna = bolna_server([execution(call_id="edge", minutes_ago=int(7.8 * 24 * 60))], AGENTS[:1])
    settings = settings.with_overrides(backfill_days=8)
    crash = CrashAt(*write)
    app = app_for(settings, mongo, bolna, crash)
    if stored_first:
        app.run_job("call_processor")
    crash.armed = True
    with pytest.raises(KeyboardInterrupt):
        app.run_job("crm_sync")  # the first customer sync dies before its cursor is saved
    # Seven hours later (the call is now more than 8 days old) the daemon is started again.
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(hours=7), tick=True):
        run_both(app_for(settings, mongo, bolna))
        assert_matches_ground_truth(app.db, bolna)


class RefuseWrites:
    """A MongoDB hook: the database refuses the next `times` writes of one kind, as a server does a
    document over 16 MB or an update that does not fit an old record."""

    def __init__(self, collection: str, method: str, times: int = 1):
        self.target, self.times = (collection, method), times

    def __call__(self, collection: str, method: str) -> None:
        if (collection, method) == self.target and self.times > 0:
            self.times -= 1
            raise OperationFailure("$setUnion only supports arrays, not string", code=28664)


def test_a_page_the_database_refuses_is_recorded_and_the_rest_of_the_run_goes_on(settings, mongo, bolna_server):
    calls = [execution(f"+9198765432{n:02d}", call_id=f"a1-{n}", agent_id="agent-1", minutes_ago=30 + n)
             for n in range(4)]
    calls += [execution(f"+9198111122{n:02d}", call_id=f"a2-{n}", agent_id="agent-2", minutes_ago=30 + n)
              for n in range(4)]
    bolna = bolna_server(calls, AGENTS)
    refuse = RefuseWrites(CUSTOMERS, "bulk_write")
    app = app_for(settings.with_overrides(bolna_page_size=2), mongo, bolna, refuse)

    run = app.run_job("crm_sync")
    assert run["status"] == "partial"
    [error] = [e for e in run["errors"] if e["code"] == "page_write_failed"]
    assert error["agentId"] == "agent-1" and "OperationFailure (code 28664)" in error["message"]
    assert "a1-" in error["message"]  # which calls, so someone can look
    assert run["agents"]["agent-2"]["inserted"] == 4  # the other agent was synced all the same
    stored = {c["phone"] for c in app.db[CUSTOMERS].find()}
    assert len(stored) == 6  # every page but the refused one
    # The cursor did not pass the refused page: the next run writes it.
    assert app.run_job("crm_sync")["status"] == "ok"
    assert app.db[CUSTOMERS].count_documents({}) == 8
    app.run_job("call_processor")
    assert_matches_ground_truth(app.db, bolna)


def test_a_full_record_failing_for_hours_is_followed_instead_of_holding_the_cursor(settings, mongo, bolna_server):
    stuck = execution(call_id="stuck", minutes_ago=7 * 60)
    fresh = execution("+919811100000", call_id="fresh", minutes_ago=30)
    bolna = bolna_server([stuck, fresh], AGENTS[:1], projection="trimmed")
    bolna.inject(r"/executions/stuck$", status=503, times=10_000)
    app = app_for(settings, mongo, bolna)

    run = app.run_job("crm_sync")
    assert run["status"] == "partial"
    state = app.db[SYNC_STATE].find_one({"job": "crm_sync"})
    assert [p["callId"] for p in state["pending"]] == ["stuck"]
    assert state["cursor"] > parse_time(stuck["created_at"])  # not held back by it: the window moved on
    again = app.run_job("crm_sync")  # reads only the overlap, and asks for the stuck call by id
    assert "fetched" not in again["counts"] and [e["callId"] for e in again["errors"]] == ["stuck"]

    bolna.clear_faults()
    run_both(app)
    assert_matches_ground_truth(app.db, bolna)
    assert app.db[SYNC_STATE].find_one({"job": "crm_sync"})["pending"] == []
