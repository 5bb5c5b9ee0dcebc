"""Fuzzing with hostile input (issue 25; strategies in tests/hostile_inputs.py): whatever a webhook
body or an execution page holds, the listener never answers 5xx while MongoDB is up, no job and
no processor batch crashes, a bad record is skipped and counted, and the rest of its page is
stored. Bounded examples in the normal run; CALLSYNC_HYPOTHESIS_PROFILE=long runs many more."""
import json
import logging

import mongomock
import pytest
import requests
from hypothesis import example, given, strategies as st

from services.database import CALLS, CUSTOMERS, WEBHOOK_INBOX
from services.webhooks import WAITING
from tests.faults import run_both
from tests.helpers import AGENT, build_app, execution
from tests.hostile_inputs import examples, executions, page_items, webhook_bodies
from tests.test_webhooks import bolna, deliver, hook_settings, started, wait_until  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(600)

GOOD_NUMBERS = ("+919811111111", "+14155552671")
FAILURE_EVENTS = {"webhook_error", "webhook_processing_failed", "webhook_batch_refused"}


def test_the_listener_never_answers_5xx_and_the_processor_never_fails_a_batch(hook_settings, mongo, bolna,
                                                                                started, caplog):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    session = requests.Session()

    @examples(60)
    @given(webhook_bodies)
    # What main answered 503 to, for Bolna to retry for ever (issue 25).
    @example(json.dumps(execution(call_id="x-1") | {"created_at": "0001-01-01T00:00:00+01:00"}).encode())
    @example(json.dumps(execution(call_id="x-2") | {"conversation_duration": 10**400}).encode())
    def a_delivery_is_answered_without_5xx(body):
        answer = deliver(base, body, session=session)
        assert answer.status_code < 500, (answer.status_code, answer.text[:200], body[:200])
        assert "Traceback" not in answer.text

    with caplog.at_level(logging.INFO):
        a_delivery_is_answered_without_5xx()
        # The processor wrote or failed each accepted delivery alone, and still writes a good one.
        assert deliver(base, execution(GOOD_NUMBERS[0], call_id="good-after"), session=session).status_code == 200
        wait_until(lambda: app.db[WEBHOOK_INBOX].count_documents({"state": WAITING}) == 0)
    assert app.db[CALLS].find_one({"callId": "good-after"}) is not None
    assert not FAILURE_EVENTS & {getattr(record, "event", None) for record in caplog.records}
    assert "Traceback" not in caplog.text


def test_a_hostile_page_is_written_but_for_its_bad_records_each_counted(settings, bolna_server):
    """A page of hostile records between two good ones, as the listing of both jobs."""
    bolna = bolna_server([], [AGENT])

    @examples(25)
    @given(st.lists(executions(st.just("")) | page_items, min_size=1, max_size=6))
    def the_rest_of_the_page_is_stored(hostile):
        # Ids of their own for most hostile records, so each can be accounted for.
        for index, item in enumerate(hostile):
            if isinstance(item, dict) and item.get("id") == "":
                item["id"] = f"h-{index}"
        good = [execution(number, call_id=f"good-{i}") for i, number in enumerate(GOOD_NUMBERS)]
        records = [good[0], *hostile, good[1]]
        body = json.dumps({"data": records, "total": len(records), "has_more": False}).encode()
        bolna.inject(r"/executions$", body=body, times=2)
        app = build_app(settings.with_overrides(backfill_days=6, llm_calls_per_run=20), mongomock.MongoClient(), bolna)
        try:
            runs = run_both(app)
        finally:
            bolna.clear_faults()
            app.close()
        for job, run in runs.items():
            assert run["status"] in ("ok", "partial"), (job, run.get("errors"))
        db = app.db
        stored = {call["callId"] for call in db[CALLS].find({}, {"callId": 1})}
        assert {"good-0", "good-1"} <= stored
        assert {c["phone"] for c in db[CUSTOMERS].find({"phone": {"$in": list(GOOD_NUMBERS)}})} == set(GOOD_NUMBERS)
        counted = {error.get("callId") for error in runs["call_processor"]["errors"]}
        for index, item in enumerate(hostile):
            if isinstance(item, dict) and item.get("id") == f"h-{index}":
                assert f"h-{index}" in stored or f"h-{index}" in counted, f"h-{index} neither stored nor counted"

    the_rest_of_the_page_is_stored()


def test_a_page_nested_too_deep_to_parse_is_an_error_not_a_crash(settings, bolna_server):
    """100,000 levels of nesting in one record: JSON's parser runs out of stack on the whole page
    (it cannot be split into records), which is an error of the run, as an unreadable page is;
    before, the RecursionError failed both jobs."""
    bolna = bolna_server([], [AGENT])
    good = json.dumps(execution(GOOD_NUMBERS[0], call_id="good-0")).encode()
    deep = b'{"id": "deep", "extracted_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bolna.inject(r"/executions$", body=b'{"data": [' + good + b", " + deep + b'], "total": 2, "has_more": false}',
                 times=100)
    app = build_app(settings.with_overrides(backfill_days=6), mongomock.MongoClient(), bolna)
    try:
        runs = run_both(app)
    finally:
        app.close()
    for run in runs.values():
        assert run["status"] == "partial"
        assert any("nested too deep" in error["message"] for error in run["errors"])
