"""The analyzer on today's Groq (issue 13): schema-constrained answers chosen by the model, the
form errors no call can get past, a model that does not exist, pacing by the rate-limit headers,
and the cost of every analysis. The real groq SDK against the fake Groq server over HTTP."""
import logging
from concurrent.futures import ThreadPoolExecutor

import groq as groq_sdk
import pytest

from fakes.groq_server import FakeGroq
from fakes.mongo_hooks import HookedClient
from services.analyzer.groq_analyzer import LlmUnavailable
from services.analyzer.schema import Usage, estimated_cost
from tests.test_analyzer_batch import add_call, add_calls, call, fake, run, settings  # noqa: F401 - fixtures
from utils.config import ANALYSIS_KEYS, DEFAULT_PRICES, ExtraField, Settings
from worker.app import Runtime

pytestmark = pytest.mark.timeout(60)

BUDGET = ExtraField("budget", "the budget the caller named")


# -- the answer format --------------------------------------------------------------------------

def test_the_default_model_is_asked_for_a_strict_schema_of_the_whole_analysis(fake, db, settings):
    fake.extra = {"budget": None}
    add_call(db, "c1")
    run(db, settings.with_overrides(analysis_extra_fields=(BUDGET,)))
    [request] = fake.recorded()
    assert request.status == 200  # the fake refuses a strict schema Groq would refuse
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert list(schema["properties"]) == [*ANALYSIS_KEYS, "budget"] == schema["required"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["tag"]["enum"] == list(settings.analysis_tags)
    assert schema["properties"]["budget"]["type"] == ["string", "null"]
    assert request.body["reasoning_effort"] == "low"
    assert call(db, "c1")["analysis"]["status"] == "ok"


def test_a_model_without_constrained_decoding_gets_json_mode_and_no_reasoning_effort(fake, db, settings):
    add_call(db, "c1")
    run(db, settings.with_overrides(groq_model="qwen/qwen3.6-27b"))
    [request] = fake.recorded()
    assert request.body["response_format"] == {"type": "json_object"}
    assert "reasoning_effort" not in request.body and request.status == 200


@pytest.mark.parametrize("model, forced, expected", [
    ("openai/gpt-oss-20b", "json_object", {"type": "json_object"}),
    ("qwen/qwen3.6-27b", "json_schema", {"type": "json_schema", "strict": False}),
])
def test_the_answer_format_can_be_forced(fake, db, settings, model, forced, expected):
    add_call(db, "c1")
    run(db, settings.with_overrides(groq_model=model, groq_answer_format=forced))
    [request] = fake.recorded()
    sent = request.body["response_format"]
    assert sent["type"] == expected["type"]
    if "strict" in expected:
        assert sent["json_schema"]["strict"] is expected["strict"]
    assert call(db, "c1")["analysis"]["status"] == "ok"


def test_a_failed_generation_is_that_calls_failure_and_the_batch_goes_on(fake, db, settings):
    fake.respond("json_validate_failed", times=1)
    add_calls(db, 3)
    recorder = run(db, settings.with_overrides(llm_concurrency=1))
    first = call(db, "c0")["analysis"]
    assert first["status"] == "failed" and "BadRequestError (HTTP 400)" in first["error"]
    assert first["usedFallback"] is True
    assert recorder.counts["analyzed"] == 2 and recorder.counts["failed"] == 1


def test_a_request_form_groq_refuses_stops_the_llm_without_burning_the_queue(fake, db, settings):
    fake.respond("bad_request")
    add_calls(db, 5)
    with pytest.raises(LlmUnavailable, match="refused the request .*invalid_request_error.*GROQ_ANSWER_FORMAT"):
        run(db, settings.with_overrides(llm_concurrency=1))
    assert len(fake.recorded()) == 1
    assert all(not doc["processed"] and doc["attempts"] == 0 for doc in db.calls.find())


def test_a_model_that_does_not_exist_is_one_clear_start_up_warning(fake, mongo, settings, caplog, bolna_server):
    fake.retired_models = {"openai/gpt-oss-20b"}
    app = Runtime.build(settings.with_overrides(mongodb_uri="mongodb://unused", bolna_api_key="k"),
                        mongo_client=HookedClient(mongo))
    with caplog.at_level(logging.WARNING):
        app.prepare()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["GROQ_MODEL openai/gpt-oss-20b does not exist on Groq (404): calls stay queued "
                        "until it is set to a current model such as openai/gpt-oss-20b"]
    fake.retired_models = set()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        app.prepare()
    assert not [r for r in caplog.records if "GROQ_MODEL" in r.getMessage()]
    app.close()


# -- pacing ---------------------------------------------------------------------------------------

LONG_TALK = "".join(f"user: I want to know about flat {n}, the price and the parking please.\n"
                    f"assistant: Flat {n} is on floor {n % 12}, it has covered parking.\n" for n in range(55))


def test_the_fake_refuses_a_burst_over_its_token_limit_as_groq_does(fake):
    """What an unpaced burst meets (and so what the pacing test below could fail on)."""
    limited = FakeGroq(tokens_per_minute=8000, rate_window_seconds=60).start()
    try:
        client = groq_sdk.Groq(api_key="key-1", base_url=limited.base_url, max_retries=0)

        def ask(_):
            try:
                client.chat.completions.create(model="openai/gpt-oss-20b", messages=[
                    {"role": "user", "content": '{"transcript": %r}' % LONG_TALK}])
                return None
            except groq_sdk.RateLimitError as exc:
                return exc

        with ThreadPoolExecutor(10) as pool:
            refusals = [error for error in pool.map(ask, range(10)) if error is not None]
    finally:
        limited.stop()
    assert len(refusals) >= 4
    error = refusals[0]
    assert int(error.response.headers["retry-after"]) >= 1
    details = error.body["error"]
    assert details["type"] == "tokens" and "Please try again in" in details["message"]
    assert error.response.headers["x-ratelimit-remaining-tokens"].isdigit()


def test_a_ten_call_batch_paced_by_the_headers_meets_no_429_from_a_token_limit(db, settings):
    # ~1,500 tokens a call against 8K tokens per (shortened) minute: about twice what the limit
    # holds, so the batch must wait for it to refill and may not fire all at once.
    with FakeGroq(tokens_per_minute=8000, rate_window_seconds=2.0) as limited:
        for number in range(10):
            add_call(db, f"c{number}", minutes_ago=100 - number, transcript=LONG_TALK + f"user: flat c{number}\n")
        recorder = run(db, settings.with_overrides(groq_base_url=limited.base_url, llm_concurrency=4))
        statuses = limited.statuses()
    assert recorder.counts["analyzed"] == 10
    assert statuses == [200] * 10


def test_concurrency_adapts_to_what_the_limit_holds(db, settings):
    with FakeGroq(latency=0.3) as roomy:
        add_calls(db, 8)
        run(db, settings.with_overrides(groq_base_url=roomy.base_url, llm_concurrency=4, llm_calls_per_run=8))
        assert roomy.max_in_flight == 4  # one alone until the first answer told the limits, then all four
    db.calls.delete_many({})
    # Room for one request at a time: no more than one is ever in flight.
    with FakeGroq(latency=0.05, tokens_per_minute=3000, rate_window_seconds=0.5) as tight:
        for number in range(4):
            add_call(db, f"t{number}", minutes_ago=100 - number, transcript=LONG_TALK)
        recorder = run(db, settings.with_overrides(groq_base_url=tight.base_url, llm_concurrency=4))
        assert tight.max_in_flight == 1 and tight.statuses() == [200] * 4
    assert recorder.counts["analyzed"] == 4


# -- cost -------------------------------------------------------------------------------------------

def test_each_analysis_and_run_carries_its_tokens_and_estimated_cost(fake, db, settings):
    add_calls(db, 3)
    recorder = run(db, settings)
    price = DEFAULT_PRICES[settings.groq_model]
    total = 0.0
    for doc in db.calls.find():
        usage = doc["analysis"]["usage"]
        assert usage["promptTokens"] > 0 and usage["completionTokens"] > 0
        expected = estimated_cost(Usage(usage["promptTokens"], usage["completionTokens"]), price)
        assert usage["costUsd"] == pytest.approx(expected)
        total += expected
    assert recorder.counts["costUsd"] == pytest.approx(total)
    assert recorder.counts["promptTokens"] == sum(d["analysis"]["usage"]["promptTokens"] for d in db.calls.find())


def test_a_model_without_a_price_is_counted_as_unpriced_not_free(fake, db, settings):
    add_calls(db, 2)
    recorder = run(db, settings.with_overrides(groq_model="someone/new-model"))
    assert [doc["analysis"]["usage"]["costUsd"] for doc in db.calls.find()] == [None, None]
    assert recorder.counts["unpricedAnalyses"] == 2 and "costUsd" not in recorder.counts


def test_the_heuristic_costs_nothing(db):
    add_calls(db, 2)
    recorder = run(db, Settings())
    assert [doc["analysis"]["usage"]["costUsd"] for doc in db.calls.find()] == [0.0, 0.0]
    assert "costUsd" not in recorder.counts and "unpricedAnalyses" not in recorder.counts


def test_with_many_accounts_the_daemons_model_is_checked_at_start_up_too(fake, mongo, settings, caplog):

    fake.retired_models = {"openai/gpt-oss-20b"}
    fleet = Runtime.build(settings.with_overrides(account_source="mongodb", mongodb_uri="mongodb://unused"),
                          mongo_client=HookedClient(mongo))
    with caplog.at_level(logging.WARNING):
        fleet.prepare()
    assert any("GROQ_MODEL openai/gpt-oss-20b does not exist" in r.getMessage() for r in caplog.records)
    fleet.close()
