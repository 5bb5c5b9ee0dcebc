"""Hostile records on one page: each is written safely or refused with its own error, and the rest
of the page is written."""
import json

import pytest

from services.database import CALLS, CUSTOMERS
from tests.faults import app_for, assert_matches_ground_truth, run_both
from tests.helpers import AGENT, execution

pytestmark = pytest.mark.timeout(60)

HUGE = "user: I would like a 3 BHK flat near the metro, please call me back.\n" * 15_000  # ~1 MB


def hostile_page() -> list[dict]:
    deeply_nested = {"name": "Deep"}
    for level in range(200):
        deeply_nested = {f"level{level}": deeply_nested}
    no_id = execution("+919800000001")
    del no_id["id"]
    return [
        execution("+919811111111", call_id="huge", transcript=HUGE),
        execution("+919822222222", call_id="control-chars", transcript="assistant: hi\x00\x07\x1b[31m\nuser: ok\x0c\n",
                  extracted={"name": "Ra\x00vi", "na\x00me.$x": "v", "$where": "1"}),
        execution("+919833333333", call_id="bad-bytes", transcript="user: NOT-UTF8 here\n"),
        execution("+919844444444", call_id="surrogate", transcript="user: broken emoji \ud83d\n"),
        execution("+0000", call_id="phone-zeros"),
        execution("abc", call_id="phone-letters"),
        execution("1" * 25, call_id="phone-25-digits"),
        execution("+919855555555", call_id="extracted-list", extracted=["name", "Ravi"]),
        execution("+919866666666", call_id="deeply-nested", extracted=deeply_nested),
        execution("+919877777777", call_id="big-number", extracted={"budget": 10**30}),
        no_id,
        execution("+919888888888", call_id="plain"),
    ]


def page_body(records: list[dict]) -> bytes:
    """The page as the API would send it, with raw bytes that are not UTF-8 in one transcript."""
    body = json.dumps({"data": records, "total": len(records), "has_more": False}).encode()
    return body.replace(b"NOT-UTF8", b"caf\xe9 \xff\xfe")


def test_hostile_records_are_written_safely_or_refused_alone(settings, mongo, bolna_server):
    records = hostile_page()
    bolna = bolna_server(records, [AGENT])
    bolna.inject(r"/executions$", body=page_body(records), times=2)  # the listing of both jobs
    # One 7-day window: one listing per job; a batch big enough for every call.
    app = app_for(settings.with_overrides(backfill_days=6, llm_calls_per_run=20), mongo, bolna)
    runs = run_both(app)
    assert {r["status"] for r in runs.values()} == {"partial"}

    errors = {(e["code"], e.get("callId")) for e in runs["crm_sync"]["errors"]}
    assert errors == {("missing_id", None), ("bad_extracted_data", "extracted-list"),
                      ("invalid_phone", "phone-zeros"), ("invalid_phone", "phone-25-digits")}
    assert runs["crm_sync"]["counts"]["withheldNumber"] == 1  # "abc": no digits, no customer, no error
    assert {(e["code"], e.get("callId")) for e in runs["call_processor"]["errors"]} == {
        ("missing_id", None), ("bad_extracted_data", "extracted-list")}

    calls = {c["callId"]: c for c in app.db[CALLS].find()}
    assert len(calls["huge"]["transcript"]) == len(HUGE)
    assert calls["control-chars"]["transcript"] == "assistant: hi[31m\nuser: ok\n"
    assert calls["control-chars"]["extracted"] == {"name": "Ravi", "name_$x": "v", "_where": "1"}
    assert calls["bad-bytes"]["transcript"] == "user: caf\ufffd \ufffd\ufffd here\n"
    assert calls["surrogate"]["transcript"] == "user: broken emoji \ufffd\n"
    assert calls["extracted-list"]["extractedData"] == ["name", "Ravi"] and calls["extracted-list"]["extracted"] is None
    deep, depth = calls["deeply-nested"]["extracted"], 0
    while isinstance(deep, dict):  # deeper than anything real: cut off, the rest kept as text
        [deep], depth = deep.values(), depth + 1
    assert isinstance(deep, str) and depth <= 7
    assert calls["phone-letters"]["customerPhone"] is None
    assert calls["phone-letters"]["customerPhoneMissing"] == "withheld"
    assert calls["big-number"]["extracted"] == {"budget": str(10**30)}
    assert all(c["processed"] for c in calls.values())  # analyzed too, huge transcript included

    customers = {c["phone"]: c for c in app.db[CUSTOMERS].find()}
    assert {phone: c["phoneValid"] for phone, c in customers.items() if not c["phoneValid"]} == {
        "+0000": False, "1" * 25: False}
    assert_matches_ground_truth(app.db, bolna)
