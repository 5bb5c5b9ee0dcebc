"""Dates a caller or a broken record can send (issue 25): a time that cannot be represented, or
lies further ahead than Bolna's clock can be, is refused with its reason: a 400 at the webhook
listener (never a 503, which Bolna retries for ever), a counted and skipped record in the poll
(never a crashed job). That a far-future time stored before cannot freeze a call is in
tests/test_call_order.py."""
from datetime import datetime, timedelta

import pytest

from fakes.dataset import iso
from models.execution import FUTURE_TOLERANCE, MalformedExecution, parse_execution
from services.database import CALLS, WEBHOOK_INBOX
from tests.helpers import AGENT, build_app, execution
from tests.test_webhooks import bolna, deliver, hook_settings, started  # noqa: F401 - fixtures
from utils.clock import utcnow

pytestmark = pytest.mark.timeout(120)

UNREPRESENTABLE = "0001-01-01T00:00:00+01:00"  # before year 1 in UTC
FAR_FUTURE = "9999-12-31T23:59:59Z"


def _later(hours: float) -> str:
    return iso(utcnow() + timedelta(hours=hours))


@pytest.mark.parametrize("field, value", [
    ("created_at", UNREPRESENTABLE), ("updated_at", UNREPRESENTABLE), ("created_at", "9999-12-31T23:59:59-01:00"),
    ("created_at", FAR_FUTURE), ("updated_at", FAR_FUTURE), ("updated_at", "2099-01-01T00:00:00Z"),
])
def test_an_unusable_time_is_a_malformed_execution_saying_why(field, value):
    record = execution(call_id="d-1") | {field: value}
    with pytest.raises(MalformedExecution) as refused:
        parse_execution(record, "IN")
    assert refused.value.code == "unusable_time" and refused.value.call_id == "d-1"
    assert field in str(refused.value) and value[:19] in str(refused.value)


def test_a_time_within_the_tolerance_of_this_server_is_taken():
    now = utcnow()
    ahead = FUTURE_TOLERANCE - timedelta(minutes=5)
    record = execution(call_id="d-2") | {"created_at": iso(now), "updated_at": iso(now + ahead)}
    assert parse_execution(record, "IN", now=now).updated_at == now + ahead
    assert parse_execution(execution(call_id="d-3") | {"created_at": "1969-07-20T20:17:40Z"}, "IN").created_at \
        == datetime(1969, 7, 20, 20, 17, 40)


def test_the_listener_answers_400_with_the_reason_to_an_unusable_time(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app, processor=False)
    for field, value in (("created_at", UNREPRESENTABLE), ("updated_at", FAR_FUTURE), ("created_at", _later(48))):
        answer = deliver(base, execution(call_id="d-4") | {field: value})
        assert answer.status_code == 400, (field, value, answer.status_code)
        assert field in answer.json()["error"] and "Traceback" not in answer.text
    assert deliver(base, execution(call_id="d-4")).status_code == 200
    assert app.db[WEBHOOK_INBOX].count_documents({}) == 1


def test_the_poll_counts_and_skips_a_record_with_an_unusable_time_and_stores_the_rest(settings, mongo,
                                                                                      bolna_server):
    """The listing filters by `created_at`, so a listed record's bad time is in `updated_at`."""
    records = [execution(call_id="good-1"), execution(call_id="d-5") | {"updated_at": UNREPRESENTABLE},
               execution(call_id="d-6") | {"updated_at": FAR_FUTURE}, execution(call_id="good-2")]
    app = build_app(settings, mongo, bolna_server(records, (AGENT,)))
    for job in ("crm_sync", "call_processor"):
        run = app.run_job(job)
        assert run["status"] == "partial"
        assert {(e["code"], e.get("callId")) for e in run["errors"]} == {("unusable_time", "d-5"),
                                                                         ("unusable_time", "d-6")}
    assert {call["callId"] for call in app.db[CALLS].find()} == {"good-1", "good-2"}
