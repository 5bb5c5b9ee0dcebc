"""Phase 2 end to end: the real groq SDK against the fake Groq server, calls in mongomock."""
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from fakes.groq_server import FakeGroq
from fakes.mongo_hooks import HookedClient
from services.database import ensure_indexes, account_view
from tests.helpers import requeue, wait_until
from worker.app import build_analysis
from services.analyzer.groq_analyzer import MAX_REQUESTS_PER_CALL, LlmUnavailable
from services.analyzer.claims import MAX_ATTEMPTS
from services.analyzer.heuristic import RULES
from services.analyzer.write_back import SETTLED_RESUMES
from services import lease
from services.run_records import RunRecorder
from utils.clock import to_millis, utcnow
from utils.config import ExtraField, Settings

pytestmark = pytest.mark.timeout(30)

PHONE = "+919876543210"


@pytest.fixture
def fake():
    with FakeGroq(retry_after=0.2) as server:
        yield server


@pytest.fixture
def settings(fake):
    return Settings(groq_api_keys=("key-1",), groq_base_url=fake.base_url, llm_batch_deadline_seconds=10,
                    llm_timeout_seconds=5)


def transcript_for(call_id: str) -> str:
    return (f"assistant: Hello, this is Ananya from Skyline Realty about flat {call_id}.\n"
            f"user: Yes, I am interested in flat {call_id}, what is the price?\n"
            "assistant: It starts at 85 lakhs.\n")


def add_call(db, call_id, *, minutes_ago=60, transcript=None, phone=PHONE, **fields):
    db.calls.insert_one({
        "callId": call_id, "agentId": "agent-1", "status": "completed", "terminal": True,
        "callAt": utcnow() - timedelta(minutes=minutes_ago),
        "transcript": transcript_for(call_id) if transcript is None else transcript,
        "customerPhone": phone, "customerPhoneValid": True, "processed": False, "attempts": 0, **fields,
    })


def add_calls(db, count):
    """c0 is the oldest."""
    for number in range(count):
        add_call(db, f"c{number}", minutes_ago=100 - number)


def run(db, settings, owner="host:1:a"):
    recorder = RunRecorder("analyze")
    build_analysis(db, settings, owner).run(recorder)
    return recorder


def call(db, call_id):
    return db.calls.find_one({"callId": call_id})


def expire_claims(db):
    db.calls.update_many({lease.UNTIL: {"$ne": None}}, {"$set": {lease.UNTIL: utcnow() - timedelta(seconds=1)}})


def has_claim(doc):
    return any(field in doc for field in lease.RELEASED)


def analyzed_flats(fake):
    return [re.search(r"interested in flat (\w+)", r.transcript).group(1) for r in fake.recorded()]


# -- selection -----------------------------------------------------------------------------------

def test_a_run_analyzes_the_oldest_calls_up_to_the_batch_limit(fake, db, settings):
    add_calls(db, 5)
    add_call(db, "ongoing", minutes_ago=500, terminal=False)
    recorder = run(db, settings.with_overrides(llm_calls_per_run=3))
    assert sorted(analyzed_flats(fake)) == ["c0", "c1", "c2"]
    assert [call(db, f"c{n}")["processed"] for n in range(5)] == [True, True, True, False, False]
    assert call(db, "c3")["attempts"] == 0 and not has_claim(call(db, "c3"))
    assert not call(db, "ongoing")["processed"]
    assert recorder.counts["analyzed"] == 3


def test_short_transcripts_are_skipped_without_a_request_or_using_up_the_limit(fake, db, settings):
    add_call(db, "hello", transcript="user:  hi  ", minutes_ago=300)
    add_call(db, "silent", transcript=None, minutes_ago=290)
    db.calls.update_one({"callId": "silent"}, {"$set": {"transcript": None}})
    add_call(db, "padded", transcript="   user: ok, bye" + " " * 50, minutes_ago=280)
    add_calls(db, 2)
    recorder = run(db, settings.with_overrides(llm_calls_per_run=2))
    assert sorted(analyzed_flats(fake)) == ["c0", "c1"]
    for call_id in ("hello", "silent", "padded"):
        analysis = call(db, call_id)["analysis"]
        assert call(db, call_id)["processed"]
        assert (analysis["status"], analysis["skipped"]) == ("skipped", "transcript_too_short")
        assert "leadScore" not in analysis
    assert recorder.counts["skipped"] == 3 and recorder.counts["analyzed"] == 2
    assert db.activities.count_documents({"callId": "hello"}) == 0


# -- what the LLM gets and what is written back ------------------------------------------------

def test_request_is_one_structured_completion_at_temperature_zero_with_pii_masked(fake, db, settings):
    add_call(db, "c1", transcript="assistant: Hi there, how can I help?\n"
                                  "user: Call me on +91 98765 43210 or 080-2345-6789, mail ravi@example.com")
    run(db, settings)
    [request] = fake.recorded()
    assert request.body["temperature"] == 0
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["model"] == settings.groq_model
    assert request.authorization == "Bearer key-1"
    assert "[phone]" in request.transcript and "[email]" in request.transcript
    assert not re.search(r"\d{4}", request.transcript.replace(" ", "").replace("-", ""))
    assert "ravi@" not in request.sent_text


def test_analysis_is_stored_on_the_call_and_applied_to_the_contact(fake, db, settings):
    add_call(db, "c1")
    recorder = run(db, settings)
    stored = call(db, "c1")
    analysis = stored["analysis"]
    assert stored["processed"] and stored["attempts"] == 1 and not has_claim(stored)
    assert analysis["status"] == "ok" and analysis["error"] is None and not analysis["usedFallback"]
    assert analysis["model"] == settings.groq_model and analysis["attemptedAt"] <= utcnow()
    assert (analysis["tag"], analysis["leadScore"], analysis["leadStatus"]) == ("Interested", 50, "CONTACTED")
    assert analysis["summary"] == "Customer said: Yes, I am interested in flat c1, what is the price?"
    assert analysis["usage"]["promptTokens"] > 0 and analysis["usage"]["completionTokens"] > 0
    assert recorder.counts["promptTokens"] == analysis["usage"]["promptTokens"]
    assert recorder.counts["completionTokens"] == analysis["usage"]["completionTokens"]
    contact = db.contacts.find_one({"phone": PHONE})
    assert (contact["tag"], contact["leadScore"], contact["sentiment"]) == ("Interested", 50, "positive")
    assert contact["pastConversations"][0]["callId"] == "c1"
    activity = db.activities.find_one({"callId": "c1"})
    assert activity["contactId"] == contact["_id"] and activity["model"] == settings.groq_model
    assert activity["changes"]["leadScore"] == {"from": None, "to": 50}


def test_configured_extra_fields_reach_the_prompt_and_the_contact(fake, db, settings):
    fake.extra = {"budget": "85 lakhs", "wantsParking": True}
    extra = (ExtraField("budget", "Budget the caller mentioned"), ExtraField("wantsParking", "Asked for parking", "boolean"))
    add_call(db, "c1")
    run(db, settings.with_overrides(analysis_extra_fields=extra))
    assert "Budget the caller mentioned" in fake.recorded()[0].sent_text
    assert db.contacts.find_one({"phone": PHONE})["extra"] == {"budget": "85 lakhs", "wantsParking": True}


def test_token_usage_is_summed_on_the_run_record(fake, db, settings):
    add_calls(db, 3)
    recorder = run(db, settings)
    usages = [doc["analysis"]["usage"] for doc in db.calls.find()]
    assert recorder.counts["promptTokens"] == sum(u["promptTokens"] for u in usages) > 0
    assert recorder.counts["completionTokens"] == sum(u["completionTokens"] for u in usages) > 0


def test_call_without_a_customer_number_keeps_its_analysis_on_the_call_only(fake, db, settings):
    add_call(db, "c1", phone=None)
    recorder = run(db, settings)
    assert call(db, "c1")["analysis"]["status"] == "ok"
    assert db.contacts.count_documents({}) == 0 and db.activities.count_documents({}) == 0
    assert recorder.counts["noContact"] == 1


# -- failures: processed once, with the heuristic as fallback ---------------------------------

@pytest.mark.parametrize("behaviour, error, requests", [
    ("invalid_json", "invalid answer: answer is not JSON", 1),
    ("wrong_shape", "invalid answer: tag: Input should be 'Purchased'", 1),
])
def test_a_failed_attempt_is_final_and_falls_back_to_the_heuristic(fake, db, settings, behaviour, error, requests):
    fake.respond(behaviour)
    add_call(db, "c1")
    recorder = run(db, settings)
    analysis = call(db, "c1")["analysis"]
    assert call(db, "c1")["processed"]
    assert analysis["status"] == "failed" and error in analysis["error"]
    assert analysis["usedFallback"] and analysis["model"] == "heuristic"
    # The generated calls ask prices and details: the heuristic's 'interest' rule.
    assert 15 <= analysis["leadScore"] <= 80 and analysis["confidence"] == RULES["interest"].confidence
    assert analysis["reasoning"].startswith("Heuristic")
    assert db.contacts.find_one({"phone": PHONE})["leadScore"] == analysis["leadScore"]
    assert db.activities.find_one({"callId": "c1"})["usedFallback"] is True
    assert (recorder.counts["failed"], recorder.counts["fallback"]) == (1, 1)
    assert recorder.errors[0]["callId"] == "c1" and recorder.errors[0]["code"] == "analysis_failed"
    assert len(fake.recorded()) == requests

    fake.respond("analysis")
    run(db, settings)
    assert len(fake.recorded()) == requests  # never retried by a later run


def test_without_a_groq_key_every_call_gets_the_heuristic_analysis(fake, db, settings):
    add_calls(db, 2)
    recorder = run(db, settings.with_overrides(groq_api_keys=()))
    assert fake.recorded() == []
    for doc in db.calls.find():
        assert doc["analysis"]["status"] == "ok" and doc["analysis"]["usedFallback"]
        assert doc["analysis"]["model"] == "heuristic" and doc["analysis"]["tag"] == "Interested"
    assert (recorder.counts["analyzed"], recorder.counts["fallback"]) == (2, 2)


# -- rate limits, keys, deadline, concurrency ---------------------------------------------------

def test_429_is_retried_after_the_time_the_server_asks_for(fake, db, settings):
    fake.respond("rate_limited", times=1)
    add_call(db, "c1")
    started = time.monotonic()
    run(db, settings)
    assert time.monotonic() - started >= 0.2
    assert [r.status for r in fake.recorded()] == [429, 200]
    assert call(db, "c1")["analysis"]["status"] == "ok"


def test_keys_are_used_in_rotation_and_a_rejected_key_is_set_aside(fake, db, settings):
    fake.rejected_keys = {"bad"}
    add_calls(db, 4)
    run(db, settings.with_overrides(groq_api_keys=("bad", "good-1", "good-2"), llm_concurrency=1))
    keys = Counter(r.api_key for r in fake.recorded())
    assert keys == {"bad": 1, "good-1": 2, "good-2": 2}
    assert all(doc["analysis"]["status"] == "ok" for doc in db.calls.find())


def test_a_rejected_key_gets_another_chance_in_the_next_run_of_the_same_batch(fake, db, settings):
    fake.rejected_keys = {"bad"}
    batch = build_analysis(db, settings.with_overrides(groq_api_keys=("bad", "good"), llm_concurrency=1), "host:1:a")
    add_call(db, "c1")
    batch.run(RunRecorder("analyze"))
    add_call(db, "c2")
    batch.run(RunRecorder("analyze"))
    assert [r.api_key for r in fake.recorded()] == ["bad", "good", "bad", "good"]


# -- the LLM unusable for a reason that is not the call's: calls stay queued -----------------------

def assert_all_queued(db):
    for doc in db.calls.find():
        assert not doc["processed"] and doc["attempts"] == 0 and not has_claim(doc) and "analysis" not in doc


def test_when_every_key_is_rejected_calls_stay_queued_and_the_run_fails(fake, db, settings):
    fake.rejected_keys = {"key-1"}
    add_calls(db, 3)
    with pytest.raises(LlmUnavailable, match=r"every Groq API key was rejected \(401\)"):
        run(db, settings.with_overrides(llm_concurrency=1))
    assert len(fake.recorded()) == 1  # no slot claims another call once the LLM is known unusable
    assert_all_queued(db)
    fake.rejected_keys = set()  # the key renewed: the next run analyzes them
    run(db, settings)
    assert all(doc["analysis"]["status"] == "ok" for doc in db.calls.find())


def test_a_model_that_no_longer_exists_keeps_the_calls_queued(fake, db, settings):
    fake.retired_models = {settings.groq_model}
    add_calls(db, 3)
    with pytest.raises(LlmUnavailable, match="model .* is not available .*404.*GROQ_MODEL"):
        run(db, settings.with_overrides(llm_concurrency=1))
    assert len(fake.recorded()) == 1
    assert_all_queued(db)


def test_groq_down_keeps_the_calls_queued_after_a_bounded_number_of_requests(fake, db, settings):
    fake.respond("server_error")
    add_calls(db, 5)
    with pytest.raises(LlmUnavailable, match=r"Groq is unavailable: .*InternalServerError \(HTTP 500\)"):
        run(db, settings.with_overrides(llm_concurrency=1))
    assert len(fake.recorded()) == MAX_REQUESTS_PER_CALL
    assert_all_queued(db)


def test_a_429_storm_with_no_wait_costs_at_most_the_request_budget(fake, db, settings):
    fake.retry_after = 0  # "retry after 0 s", again and again
    fake.respond("rate_limited")
    add_calls(db, 10)
    budget = settings.with_overrides(llm_calls_per_run=10, llm_concurrency=4)
    with pytest.raises(LlmUnavailable, match="budget of 20 LLM requests is spent"):
        run(db, budget)
    assert len(fake.recorded()) == budget.llm_requests_per_run == 20
    assert_all_queued(db)


def test_an_outage_after_some_analyses_is_an_error_on_a_partial_run(fake, db, settings):
    add_calls(db, 4)
    fake.respond("analysis", times=2)
    fake.respond("server_error", times=100)
    recorder = run(db, settings.with_overrides(llm_concurrency=1))
    assert recorder.counts["analyzed"] == 2 and recorder.counts["released"] == 1
    assert [e["code"] for e in recorder.errors] == ["llm_unavailable"]
    assert [doc["processed"] for doc in db.calls.find(sort=[("callAt", 1)])] == [True, True, False, False]


def test_a_429_storm_ends_the_batch_by_its_deadline_leaving_calls_unprocessed(fake, db, settings):
    fake.respond("rate_limited")
    add_calls(db, 6)
    started = time.monotonic()
    # 3 s: room for both calls to be asked twice (the first request goes alone) on a loaded machine;
    # a request budget the 429s every 0.2 s do not spend first.
    recorder = run(db, settings.with_overrides(llm_batch_deadline_seconds=3.0, llm_concurrency=2,
                                               llm_request_budget=200))
    assert time.monotonic() - started < 20.0  # its deadline, not 429s for ever (bound loose for busy machines)
    # The two calls in flight waited out 429s (every 0.2 s) until a wait would cross the deadline:
    # each was asked again after a 429 (how many times depends on how busy the machine is).
    assert recorder.counts["released"] == 2 and recorder.counts["failed"] == 0
    asked = Counter(analyzed_flats(fake))
    assert set(asked) == {"c0", "c1"} and min(asked.values()) >= 2
    for doc in db.calls.find():
        assert not doc["processed"] and doc["attempts"] == 0 and not has_claim(doc) and "analysis" not in doc

    fake.respond("analysis")
    run(db, settings)
    assert all(doc["processed"] for doc in db.calls.find())


def test_a_request_cut_off_by_the_deadline_releases_its_call(fake, db, settings):
    fake.latency = 6.0
    add_call(db, "c1")
    started = time.monotonic()
    recorder = run(db, settings.with_overrides(llm_batch_deadline_seconds=0.5))
    assert time.monotonic() - started < 4.0  # cut off, not the 6 s answer
    stored = call(db, "c1")
    assert not stored["processed"] and stored["attempts"] == 0 and not has_claim(stored)
    assert recorder.counts["released"] == 1


def test_a_stop_signal_ends_the_batch_and_releases_calls_waiting_to_retry(fake, db, settings):
    fake.respond("rate_limited")  # every attempt waits 0.2 s before its retry, for ever
    add_calls(db, 4)
    stop = threading.Event()
    recorder = RunRecorder("analyze")
    # A batch deadline no test waits for: only the signal can end this batch.
    analysis = build_analysis(db, settings.with_overrides(llm_concurrency=2, llm_batch_deadline_seconds=3600),
                              "host:1:a", stop)
    with ThreadPoolExecutor(max_workers=1) as batch:
        running = batch.submit(analysis.run, recorder)
        # The signal once both slots hold a call (each has asked Groq), not after a guessed delay.
        wait_until(lambda: set(analyzed_flats(fake)) == {"c0", "c1"})
        stop.set()
        running.result(timeout=20)
    assert recorder.counts["released"] == 2
    for doc in db.calls.find():
        assert not doc["processed"] and doc["attempts"] == 0 and not has_claim(doc)


def test_calls_run_with_bounded_concurrency(fake, db, settings):
    fake.latency = 0.5
    add_calls(db, 8)
    # The first request goes alone (until its answer tells the limits); the next four are held
    # until all four are in flight at once, which fails (a broken barrier) if fewer may run.
    together = threading.Barrier(4, timeout=20)
    for action in [lambda: None] + [together.wait] * 4:
        fake.on_request(action)
    recorder = run(db, settings.with_overrides(llm_concurrency=4, llm_calls_per_run=8))
    assert recorder.counts["analyzed"] == 8
    assert fake.max_in_flight == 4  # four at once, never more


# -- claims: processed once across processes -------------------------------------------------

def test_two_processors_never_analyze_the_same_call(fake, db, settings):
    fake.latency = 0.05
    add_calls(db, 12)
    both = settings.with_overrides(llm_calls_per_run=12, llm_concurrency=3)
    recorders = {}
    start = threading.Barrier(2)

    def processor(owner):
        start.wait()
        recorders[owner] = run(db, both, owner=owner)

    threads = [threading.Thread(target=processor, args=(owner,)) for owner in ("host-a:1:x", "host-b:2:y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(analyzed_flats(fake)) == {f"c{n}": 1 for n in range(12)}
    assert all(doc["processed"] and doc["attempts"] == 1 for doc in db.calls.find())
    assert sum(r.counts["analyzed"] for r in recorders.values()) == 12
    assert db.activities.count_documents({}) == 12


def test_a_claim_whose_lease_expired_is_retaken_once_and_live_claims_are_left_alone(fake, db, settings):
    expired = lease.taken("dead:1:x", "t", utcnow() - timedelta(minutes=1))
    add_call(db, "retake", attempts=1, **expired)
    add_call(db, "given-up", attempts=2, **expired)
    add_call(db, "busy", attempts=1, **lease.taken("alive:1:x", "t", utcnow() + timedelta(minutes=5)))
    recorder = run(db, settings)

    assert analyzed_flats(fake) == ["retake"]
    retaken = call(db, "retake")
    assert retaken["processed"] and retaken["attempts"] == 2 and retaken["analysis"]["status"] == "ok"
    given_up = call(db, "given-up")
    assert given_up["processed"] and given_up["analysis"]["status"] == "failed"
    assert given_up["analysis"]["error"].startswith("abandoned")
    assert db.activities.count_documents({"callId": "given-up"}) == 0
    busy = call(db, "busy")
    assert not busy["processed"] and busy[lease.BY] == "alive:1:x" and busy["attempts"] == 1
    assert (recorder.counts["analyzed"], recorder.counts["failed"]) == (1, 1)


def test_claims_stored_by_an_earlier_version_are_migrated_at_start_and_keep_their_meaning(fake, mongo, db, settings):
    old = {"owner": "dead:1:x", "token": "t", "claimedAt": utcnow() - timedelta(hours=1),
           "expiresAt": utcnow() - timedelta(minutes=1)}
    add_call(db, "retake", attempts=1, claim=old)
    until = to_millis(utcnow() + timedelta(minutes=5))
    add_call(db, "busy", attempts=1, claim={**old, "owner": "alive:1:x", "expiresAt": until})
    for _ in range(2):  # idempotent
        ensure_indexes(HookedClient(mongo)["callsync_test"])
    busy = call(db, "busy")
    assert "claim" not in busy and (busy[lease.BY], busy[lease.TOKEN]) == ("alive:1:x", "t")
    assert busy[lease.UNTIL] == until

    run(db, settings)
    assert analyzed_flats(fake) == ["retake"] and call(db, "retake")["processed"]
    assert not call(db, "busy")["processed"]


def test_an_attempt_whose_call_was_requeued_meanwhile_does_not_mark_it_processed(fake, db, settings):
    add_call(db, "c1")
    fake.on_request(lambda: requeue(db, call_id="c1"))  # while its request is in flight
    # One slot: no other slot of the batch may claim the requeued call again meanwhile.
    recorder = run(db, settings.with_overrides(llm_calls_per_run=1))
    stored = call(db, "c1")
    assert not stored["processed"] and stored["attempts"] == 0 and "analysis" not in stored
    assert recorder.counts["claimLost"] == 1

    # The lost attempt wrote nothing to the CRM either: its claim was gone before it settled.
    assert db.contacts.count_documents({}) == 0 and db.activities.count_documents({}) == 0

    run(db, settings)
    assert call(db, "c1")["processed"]
    assert sorted(a["round"] for a in db.activities.find({"callId": "c1"})) == [1]
    assert len(db.contacts.find_one({"phone": PHONE})["pastConversations"]) == 1


def test_an_attempt_whose_lease_expired_and_was_retaken_writes_nothing_to_the_contact(fake, db, settings):
    add_call(db, "c1")
    heuristic = settings.with_overrides(groq_api_keys=())

    def retaken_meanwhile():
        # While the first attempt waits for Groq its lease runs out, and another process takes
        # the call and sees it through (with the offline heuristic, so the two decisions differ).
        expire_claims(db)
        assert run(db, heuristic, owner="host-b:2:y").counts["analyzed"] == 1

    fake.on_request(retaken_meanwhile)
    recorder = run(db, settings.with_overrides(llm_calls_per_run=1))
    assert recorder.counts["claimLost"] == 1
    stored = call(db, "c1")
    assert stored["analysis"]["model"] == "heuristic" and stored["attempts"] == 2
    # The contact and the decision's activity are the live claim's, not the stale attempt's.
    [activity] = db.activities.find({"callId": "c1"})
    assert activity["model"] == "heuristic"
    contact = db.contacts.find_one({"phone": PHONE})
    assert (contact["leadScore"], contact["tag"]) == (stored["analysis"]["leadScore"], stored["analysis"]["tag"])


def test_a_retake_of_a_settled_call_applies_the_settled_decision_without_asking_again(fake, mongo, db, settings):
    add_call(db, "c1")
    crashed = []

    def crash_after_settle(collection, method):
        # The settle is the first write to calls after the claim; the process ends just after it.
        if collection == "contacts" and not crashed:
            crashed.append(True)
            raise KeyboardInterrupt

    crashing = HookedClient(mongo, crash_after_settle)["callsync_test"]
    with pytest.raises(KeyboardInterrupt):
        build_analysis(crashing, settings, "host:1:a").run(RunRecorder("analyze"))
    settled = call(db, "c1")
    assert settled["settled"] and not settled["processed"] and db.contacts.count_documents({}) == 0
    expire_claims(db)

    recorder = run(db, settings)
    assert len(fake.recorded()) == 1  # the settled decision was applied, not asked for again
    assert recorder.counts["analyzed"] == 1
    stored = call(db, "c1")
    assert stored["processed"] and "settled" not in stored and stored["analysis"] == settled["analysis"]
    assert db.contacts.find_one({"phone": PHONE})["leadScore"] == settled["analysis"]["leadScore"]
    assert db.activities.count_documents({"callId": "c1", "type": "ai_analysis"}) == 1


def test_a_settled_decision_whose_crm_write_always_fails_is_finished_failed_after_a_bounded_number_of_retakes(
        fake, mongo, db, settings):
    add_call(db, "c1")

    def crm_refuses(collection, method):
        if collection == "contacts":
            raise OperationFailure("the contact write is refused")

    refusing = HookedClient(mongo, crm_refuses)["callsync_test"]
    for _ in range(MAX_ATTEMPTS + SETTLED_RESUMES + 3):
        build_analysis(refusing, settings, "host:1:a").run(RunRecorder("analyze"))
        expire_claims(db)
    stored = call(db, "c1")
    # Finished, failed with its reason; the settled decision is kept on the call, asked for once.
    assert stored["processed"] and "settled" not in stored and not has_claim(stored)
    assert stored["attempts"] == MAX_ATTEMPTS + SETTLED_RESUMES + 1
    assert stored["analysis"]["status"] == "failed" and "CRM" in stored["analysis"]["error"]
    assert stored["analysis"]["summary"] and len(fake.recorded()) == 1
    assert db.contacts.count_documents({}) == 0


def test_the_retake_of_an_attempt_that_died_after_the_crm_write_counts_the_call_once(fake, db, settings):
    add_call(db, "c1")
    run(db, settings)
    # As if the process had died after the contact write, before marking the call processed.
    db.calls.update_one({"callId": "c1"}, {"$set": {"processed": False}})
    run(db, settings)
    assert db.activities.count_documents({"callId": "c1"}) == 1
    assert len(db.contacts.find_one({"phone": PHONE})["pastConversations"]) == 1


def test_a_retake_after_a_crash_between_the_crm_write_and_finish_keeps_the_decisions_changes(
        mongo, db, settings):
    writes = []

    def crash_at_finish(collection, method):
        # The writes to calls after the claim are the settle, then `finish`: the process ends
        # just before the second.
        if (collection, method) == ("calls", "update_one"):
            writes.append(method)
            if len(writes) == 2:
                raise KeyboardInterrupt

    crashing = HookedClient(mongo, crash_at_finish)["callsync_test"]
    heuristic = settings.with_overrides(groq_api_keys=())
    add_call(db, "c1")
    with pytest.raises(KeyboardInterrupt):
        build_analysis(crashing, heuristic, "host:1:a").run(RunRecorder("analyze"))
    first = db.activities.find_one({"callId": "c1"})
    assert first["changes"]["leadScore"]["from"] is None
    expire_claims(db)

    recorder = run(db, heuristic)
    assert recorder.counts["analyzed"] == 1 and call(db, "c1")["attempts"] == 2
    [retaken] = db.activities.find({"callId": "c1"})
    # The retake found the contact already changed; the decision still says what it changed.
    assert retaken["changes"] == first["changes"] != {}
    assert retaken["at"] >= first["at"]


def test_reanalyze_adds_a_decision_and_keeps_the_earlier_one(fake, db, settings):
    add_call(db, "c1")
    run(db, settings)
    assert requeue(db, call_id="c1") == 1 and call(db, "c1")["analysisRound"] == 1
    fake.respond("invalid_json")  # the new decision differs: the heuristic's score
    run(db, settings)

    first, second = db.activities.find({"callId": "c1"}, sort=[("round", 1)])
    assert (first["round"], second["round"]) == (0, 1)
    assert (first["model"], second["model"]) == (settings.groq_model, "heuristic")
    assert first["changes"]["leadScore"] == {"from": None, "to": 50}
    assert second["changes"]["leadScore"]["from"] == 50
    assert first["contactId"] == second["contactId"]
    assert len(db.contacts.find_one({"phone": PHONE})["pastConversations"]) == 1


# -- the queue itself failing -------------------------------------------------------------------

def test_a_queue_error_ends_only_its_slot_and_is_recorded_once_with_the_outcomes_so_far(mongo, db, settings):
    claims = []

    def fail_second_and_third_claims(collection, method):
        if (collection, method) == ("calls", "find_one_and_update"):
            claims.append(method)
            if len(claims) in (2, 3):
                raise AutoReconnect("connection closed while reading +919876543210")

    failing = HookedClient(mongo, fail_second_and_third_claims)["callsync_test"]
    add_call(db, "short", transcript="user: hi", minutes_ago=300)
    add_calls(db, 2)
    recorder = RunRecorder("analyze")
    # One slot at a time: slot 1 skips "short", then its next claim fails; slot 2's claim fails;
    # slot 3 analyzes c0.
    build_analysis(failing, settings.with_overrides(groq_api_keys=(), llm_calls_per_run=3, llm_concurrency=1),
                "host:1:a").run(recorder)

    assert (recorder.counts["skipped"], recorder.counts["analyzed"]) == (1, 1)
    assert recorder.errors == [{"code": "analysis_queue_error", "message": "AutoReconnect"}]
    assert recorder.counts["errors"] == 1
    assert call(db, "c0")["processed"] and not call(db, "c1")["processed"]


@pytest.mark.parametrize("waiting", [0, 3])
def test_a_run_makes_no_empty_claims_beyond_one_per_worker(fake, mongo, settings, waiting):
    """A limit of ten: over an empty queue a run asks once (a read) and claims nothing; over three
    calls, the slots after the first empty claim do not claim again (each slot made one empty
    claim, half a steady sync's round trips with many accounts)."""
    calls = Counter()
    db = account_view(HookedClient(mongo, lambda collection, method: calls.update(
        [method] if collection == "calls" else []))["callsync_test"], None)
    ensure_indexes(db)
    add_calls(db, waiting)

    recorder = run(db, settings.with_overrides(llm_calls_per_run=10, llm_concurrency=2))

    assert recorder.counts["analyzed"] == waiting
    if waiting:
        # One claim per call, and at most one empty one per worker that asked at the same moment.
        assert waiting + 1 <= calls["find_one_and_update"] <= waiting + 2
    else:
        assert calls["find_one_and_update"] == 0 and calls["find_one"] == 1
