"""A call never moves backwards: the poll and webhooks hand the call writer one call's states in
any order, and the stored call keeps the furthest one (final over unfinished, then the newest
`updated_at`). Written through the app's own CallWriter, on mongomock here and on the wire server
in tests/test_mongodb_integration_webhooks.py."""
import time
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from models.execution import parse_execution
from services.database import CALLS
from services.run_records import RunRecorder
from tests.helpers import AGENT, build_app, execution
from fakes.bolna_server import FakeBolna
from fakes.dataset import iso
from utils.clock import utcnow

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(settings, mongo):
    with FakeBolna([AGENT], [], api_key=settings.bolna_api_key) as bolna:
        application = build_app(settings, mongo, bolna)
        yield application
        application.account.bolna.close()  # the client `mongo` is the fixture's to close


def state(call_id: str, status: str, minutes_after: float, **extra) -> dict:
    """One call's record as Bolna shows it `minutes_after` its creation (an hour ago)."""
    created = utcnow() - timedelta(hours=1)
    record = execution("+91 98765 43210", call_id=call_id, status=status, **extra)
    record.update(created_at=iso(created), updated_at=iso(created + timedelta(minutes=minutes_after)))
    return record


def write(app, *records: dict) -> RunRecorder:
    recorder = RunRecorder("call_processor")
    calls = app.account.writers.calls
    calls.write([parse_execution(record, "IN") for record in records], recorder, AGENT["id"])
    return recorder


def stored(app, call_id: str) -> dict:
    return app.db[CALLS].find_one({"callId": call_id}, {"_id": 0})


def test_a_late_unfinished_status_after_completed_changes_nothing(app):
    write(app, state("c-1", "completed", 3))
    before = stored(app, "c-1")
    # Bolna's late delivery of an earlier state, even one stamped later than the final one.
    recorder = write(app, state("c-1", "in-progress", 1), state("c-1", "in-progress", 9))
    assert stored(app, "c-1") == before
    assert before["status"] == "completed" and before["terminal"] is True
    assert recorder.counts["updated"] == 0


def test_an_older_updated_at_changes_nothing(app):
    write(app, state("c-2", "in-progress", 2))
    before = stored(app, "c-2")
    write(app, state("c-2", "ringing", 1))
    assert stored(app, "c-2") == before and before["status"] == "in-progress"


def test_an_older_final_record_does_not_replace_a_newer_one(app):
    write(app, state("c-3", "completed", 5, transcript="assistant: Hello\nuser: the corrected one\n"))
    write(app, state("c-3", "completed", 3, transcript="assistant: Hello\nuser: the first one\n"))
    assert "corrected" in stored(app, "c-3")["transcript"]


def test_newer_states_move_the_call_forward(app):
    write(app, state("c-4", "ringing", 0.5))
    write(app, state("c-4", "in-progress", 1))
    assert stored(app, "c-4")["status"] == "in-progress"
    recorder = write(app, state("c-4", "completed", 3))
    call = stored(app, "c-4")
    assert (call["status"], call["terminal"], call["transcript"] is not None) == ("completed", True, True)
    assert recorder.counts["updated"] == 1
    write(app, state("c-4", "completed", 4, transcript="assistant: Hi\nuser: a later correction\n"))
    assert "later correction" in stored(app, "c-4")["transcript"]


def test_a_final_status_wins_over_an_unfinished_one_stamped_later(app):
    write(app, state("c-5", "in-progress", 7))
    write(app, state("c-5", "no-answer", 2))
    assert stored(app, "c-5")["status"] == "no-answer"


def test_the_same_state_again_is_still_a_write_as_before(app):
    """A re-sync of an unchanged call rewrites it (only `updatedAt` changes), as the poll did."""
    write(app, state("c-6", "in-progress", 1))
    time.sleep(0.01)  # a later millisecond: `updatedAt` differs, as between two poll runs
    assert write(app, state("c-6", "in-progress", 1)).counts["updated"] == 1


def test_the_analysis_state_is_set_on_insert_and_survives_updates(app):
    write(app, state("c-7", "completed", 3))
    call = stored(app, "c-7")
    assert (call["processed"], call["attempts"]) == (False, 0) and call["createdAt"] == call["updatedAt"]
    app.db[CALLS].update_one({"callId": "c-7"}, {"$set": {"processed": True, "attempts": 1,
                                                           "analysis": {"status": "ok", "tag": "Interested"}}})
    write(app, state("c-7", "completed", 4))
    call = stored(app, "c-7")
    assert (call["processed"], call["attempts"], call["analysis"]["tag"]) == (True, 1, "Interested")
    assert call["createdAt"] < call["updatedAt"] or call["createdAt"] == call["updatedAt"]
    assert call["bolnaUpdatedAt"] > stored(app, "c-7")["callAt"]


def test_without_updated_at_the_status_order_still_holds(app):
    """The trimmed listing carries no `updated_at`: an unfinished state never replaces a final one."""
    write(app, state("c-8", "completed", 3))
    late = state("c-8", "in-progress", 9)
    del late["updated_at"]
    write(app, late)
    assert stored(app, "c-8")["status"] == "completed"
    unfinished = state("c-9", "in-progress", 1)
    write(app, unfinished)
    final = state("c-9", "completed", 3)
    del final["updated_at"]
    write(app, final)
    assert stored(app, "c-9")["status"] == "completed"


def test_values_that_look_like_field_paths_are_stored_as_sent(app):
    write(app, state("c-10", "completed", 3, transcript="$transcript", summary="$$ROOT"))
    call = stored(app, "c-10")
    assert (call["transcript"], call["bolnaSummary"]) == ("$transcript", "$$ROOT")


def test_an_updated_at_far_in_the_future_stored_before_blocks_no_later_update(app):
    """A year-9999 `updated_at` stored before such times were refused (issue 25) would outrank every
    real update for ever: a stored time further ahead than Bolna's clock can be outranks nothing."""
    frozen = replace(parse_execution(state("c-9", "completed", 1), "IN"), updated_at=datetime(9999, 12, 31))
    app.account.writers.calls.write([frozen], RunRecorder("call_processor"), AGENT["id"])
    write(app, state("c-9", "completed", 3, total_cost=7.0))  # Bolna's cost, final a little later
    assert stored(app, "c-9")["costCents"] == 7.0
    write(app, state("c-9", "completed", 2, total_cost=1.0))  # and the order holds again after it
    assert stored(app, "c-9")["costCents"] == 7.0
