"""The LLM failing inside a whole call-processor run (the analyzer's own tests cover each failure
on a hand-made queue): a timeout, and one batch meeting every failure at once."""
import pytest

from fakes.groq_server import FakeGroq
from services.analyzer.groq_analyzer import MAX_REQUESTS_PER_CALL
from services.database import CALLS
from tests.faults import app_for, assert_each_call_analyzed_once, assert_matches_ground_truth
from tests.helpers import AGENT, execution

pytestmark = pytest.mark.timeout(60)

TALK = "assistant: Hello from Skyline Realty.\nuser: I want a 2 BHK, please send the brochure.\n"


@pytest.fixture
def groq():
    with FakeGroq() as server:
        yield server


def analyzing_app(settings, mongo, bolna, groq, **overrides):
    return app_for(settings.with_overrides(groq_api_keys=("key-1",), groq_base_url=groq.base_url,
                                           llm_concurrency=1, **overrides), mongo, bolna)


def test_llm_timeout_marks_the_call_processed_with_the_error_and_the_fallback_score(settings, mongo, bolna_server, groq):
    bolna = bolna_server([execution(call_id="slow", transcript=TALK)], [AGENT])
    groq.latency = 1.0
    app = analyzing_app(settings, mongo, bolna, groq, llm_timeout_seconds=0.2)
    record = app.run_job("call_processor")
    call = app.db[CALLS].find_one({"callId": "slow"})
    assert call["processed"] is True
    analysis = call["analysis"]
    assert analysis["status"] == "failed" and "timeout" in analysis["error"].lower()
    assert analysis["usedFallback"] is True and 15 <= analysis["leadScore"] <= 80
    assert record["status"] == "partial" and record["errors"][0]["callId"] == "slow"
    requests = len(groq.recorded())
    app.run_job("call_processor")
    assert len(groq.recorded()) == requests  # a failed analysis is final: never sent again


def test_every_llm_failure_in_one_run_costs_only_its_own_call(settings, mongo, bolna_server, groq):
    calls = [execution(f"+91 98000 1000{n}", call_id=f"c{n}", minutes_ago=60 - n, transcript=TALK + f"#{n}\n")
             for n in range(5)]
    bolna = bolna_server(calls, [AGENT])
    # Oldest first: c0 invalid JSON, c1 wrong shape (the call's own failures: final), then Groq
    # down (500 to the end): c2 and the calls after it stay queued, not failed.
    groq.respond("invalid_json", times=1)
    groq.respond("wrong_shape", times=1)
    groq.respond("server_error", times=MAX_REQUESTS_PER_CALL)
    app = analyzing_app(settings, mongo, bolna, groq)
    record = app.run_job("call_processor")
    analyses = {c["callId"]: c.get("analysis") for c in app.db[CALLS].find()}
    assert {call_id: (a or {}).get("status") for call_id, a in analyses.items()} == {
        "c0": "failed", "c1": "failed", "c2": None, "c3": None, "c4": None}
    assert all(analyses[f"c{n}"]["usedFallback"] and analyses[f"c{n}"]["leadScore"] for n in range(2))
    assert record["status"] == "partial"
    assert {(e["code"], e.get("callId")) for e in record["errors"]} == {
        ("analysis_failed", "c0"), ("analysis_failed", "c1"), ("llm_unavailable", None)}

    record = app.run_job("call_processor")  # Groq is back
    assert record["status"] == "ok" and record["counts"]["analyzed"] == 3
    app.run_job("crm_sync")
    assert_matches_ground_truth(app.db, bolna)
    assert_each_call_analyzed_once(app.db)


def test_a_run_that_could_analyze_nothing_fails_and_health_and_metrics_show_it(settings, mongo, bolna_server, groq):
    bolna = bolna_server([execution(call_id="c1", transcript=TALK)], [AGENT])
    groq.rejected_keys = {"key-1"}
    app = analyzing_app(settings, mongo, bolna, groq)
    record = app.run_job("call_processor")
    assert record["status"] == "failed"
    assert "every Groq API key was rejected" in record["errors"][-1]["message"]
    assert app.db[CALLS].find_one({"callId": "c1"})["processed"] is False
    assert app.metrics.last_success_at("call_processor") is None
    failed_runs = app.metrics.registry.get_sample_value("callsync_runs_total",
                                                         {"job": "call_processor", "status": "failed"})
    assert failed_runs == 1
