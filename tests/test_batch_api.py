"""The Groq Batch API lane end to end: the real groq SDK uploads, creates and polls jobs on the
fake Groq server over HTTP; calls in mongomock (and again on the wire server,
tests/test_mongodb_integration_batch_api.py)."""
import threading

import pytest

from fakes.groq_server import FakeGroq
from fakes.mongo_hooks import HookedClient
from services.analyzer.prompt import completion_request
from services.database import LLM_BATCHES
from services.run_records import RunRecorder
from tests.helpers import requeue
from tests.test_analyzer_batch import add_calls, call
from utils.config import Settings
from worker.app import build_analysis, build_batch_api

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake():
    with FakeGroq() as server:
        yield server


@pytest.fixture
def settings(fake):
    # Two runs a day of two calls each: a backlog over 4 calls is more than a day's work.
    return Settings(groq_api_keys=("key-1",), groq_base_url=fake.base_url, llm_calls_per_run=2,
                    sync_interval_minutes=720, llm_batch_deadline_seconds=20, llm_timeout_seconds=5)


def process(db, settings, owner="host:1:a", *, lane_only=False):
    """The call processor's analysis phase, as AccountApp.analyze runs it."""
    recorder = RunRecorder("call_processor")
    analysis = build_analysis(db, settings, owner)
    build_batch_api(db, settings, owner, analysis).run(recorder)
    if not lane_only:
        analysis.run(recorder)
    return recorder


def calls(db, *ids):
    return [call(db, call_id) for call_id in ids]


OLDEST = [f"c{n}" for n in range(8)]
NEWEST = ["c8", "c9"]


def test_a_backlog_beyond_a_days_work_goes_to_a_batch_job_and_the_newest_stay_synchronous(fake, db, settings):
    add_calls(db, 10)  # c0 is the oldest
    recorder = process(db, settings)
    lines = fake.batch_api.submitted_lines()
    assert [line["custom_id"] for line in lines] == OLDEST
    first = call(db, "c0")
    assert lines[0]["body"] == completion_request(first["transcript"].strip(), settings)
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["method"] == "POST"
    # The synchronous lane analyzed the two newest within this run.
    assert sorted(r.transcript.split("flat ")[1].split(".")[0] for r in fake.recorded()) == NEWEST
    assert all(doc["processed"] for doc in calls(db, *NEWEST))
    job = db[LLM_BATCHES].find_one()
    assert job["status"] == "submitted" and job["callIds"] == OLDEST
    assert all(not doc["processed"] and doc["acquired_token"] == job["_id"] for doc in calls(db, *OLDEST))
    assert recorder.counts["batchCallsSubmitted"] == 8 and recorder.counts["batchJobsSubmitted"] == 1
    assert recorder.counts["analyzed"] == 2


def test_a_finished_job_is_applied_once_with_its_discounted_cost(fake, db, settings):
    add_calls(db, 10)
    process(db, settings)
    fake.batch_api.complete(fail_lines=("c3",))
    recorder = process(db, settings)
    for doc in calls(db, *OLDEST):
        assert doc["processed"] and "acquired_token" not in doc and doc["attempts"] == 1
    failed = call(db, "c3")["analysis"]
    assert failed["status"] == "failed" and failed["usedFallback"] and "Batch API" in failed["error"]
    ok = call(db, "c0")["analysis"]
    assert ok["status"] == "ok" and ok["model"] == settings.groq_model
    price = settings.llm_prices[settings.groq_model]
    full = (ok["usage"]["promptTokens"] * price.input_per_million
            + ok["usage"]["completionTokens"] * price.output_per_million) / 1e6
    assert ok["usage"]["costUsd"] == pytest.approx(full * 0.5)
    assert db.contacts.count_documents({}) == 1  # every call is the same customer's
    assert db.activities.count_documents({"callId": {"$in": OLDEST}}) == 8
    assert recorder.counts["analyzed"] == 7 and recorder.counts["failed"] == 1
    assert db[LLM_BATCHES].find_one()["status"] == "finished"
    assert not fake.batch_api.files  # input, output and error files deleted at Groq once applied
    requests = len(fake.recorded())
    again = process(db, settings)
    assert len(fake.recorded()) == requests and "analyzed" not in again.counts
    assert len(fake.batch_api.jobs) == 1


def test_an_expired_job_releases_the_calls_it_did_not_answer(fake, db, settings):
    add_calls(db, 10)
    process(db, settings)
    fake.batch_api.expire(answered=3)
    recorder = process(db, settings, lane_only=True)
    assert [doc["processed"] for doc in calls(db, *OLDEST)] == [True] * 3 + [False] * 5
    assert recorder.counts["batchReleased"] == 5
    assert [error["code"] for error in recorder.errors] == ["llm_batch_expired"]
    # Back in the queue, the released calls are still a backlog: the oldest three beyond one
    # run's worth went straight into a new job, with their attempt counted once.
    assert [line["custom_id"] for line in fake.batch_api.submitted_lines()] == ["c3", "c4", "c5"]
    assert [doc["attempts"] for doc in calls(db, "c3", "c4", "c5", "c6", "c7")] == [1, 1, 1, 0, 0]
    assert all("acquired_token" not in doc for doc in calls(db, "c6", "c7"))


def test_a_job_groq_refused_releases_every_call(fake, db, settings):
    add_calls(db, 10)
    process(db, settings)
    fake.batch_api.fail()
    recorder = process(db, settings, lane_only=True)
    assert not any(doc["processed"] for doc in calls(db, *OLDEST))
    assert recorder.counts["batchReleased"] == 8
    assert [error["code"] for error in recorder.errors] == ["llm_batch_failed"]
    # Released with their attempt uncounted, the six oldest beyond one run's worth went to a new job.
    resubmitted = [line["custom_id"] for line in fake.batch_api.submitted_lines()]
    assert resubmitted == OLDEST[:6] and all(doc["attempts"] == 1 for doc in calls(db, *resubmitted))


def test_a_submission_that_fails_leaves_the_calls_queued(fake, db, settings):
    add_calls(db, 10)
    fake.rejected_keys = {"key-1"}
    recorder = process(db, settings, lane_only=True)
    assert not fake.batch_api.jobs
    assert all(not doc["processed"] and "acquired_token" not in doc and doc["attempts"] == 0 for doc in calls(db, *OLDEST))
    assert db[LLM_BATCHES].find_one()["status"] == "not_submitted"
    assert [error["code"] for error in recorder.errors] == ["llm_batch_submit_failed"]


def test_two_daemons_never_submit_a_call_twice(fake, db, settings):
    add_calls(db, 30)
    start = threading.Barrier(3)
    records = []

    def daemon(owner):
        start.wait()
        records.append(process(db, settings, owner, lane_only=True))

    threads = [threading.Thread(target=daemon, args=(f"host:{n}:x",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = [line["custom_id"] for job in fake.batch_api.jobs
                 for line in fake.batch_api.submitted_lines(job)]
    assert len(submitted) == len(set(submitted)) == sum(r.counts["batchCallsSubmitted"] for r in records)
    # Each daemon counts the backlog before the others' claims land, so together they may take the
    # newest two as well; never a call twice.
    assert 1 <= len(fake.batch_api.jobs) <= 3 and 28 <= len(submitted) <= 30
    for job in list(fake.batch_api.jobs):
        fake.batch_api.complete(job)
    for owner in ("host:0:x", "host:1:x"):
        process(db, settings, owner, lane_only=True)
    assert db.calls.count_documents({"processed": True}) == len(submitted)
    assert db.activities.count_documents({}) == len(submitted)  # each call analyzed once


@pytest.mark.parametrize("mode, waiting, submitted", [("off", 10, 0), ("auto", 4, 0), ("always", 3, 3)])
def test_the_batch_mode_decides_what_goes_to_a_job(fake, db, settings, mode, waiting, submitted):
    add_calls(db, waiting)
    recorder = process(db, settings.with_overrides(llm_batch_mode=mode), lane_only=True) \
        if mode != "off" else None
    if mode == "off":
        assert build_batch_api(db, settings.with_overrides(llm_batch_mode="off"), "o", None) is None
    else:
        assert recorder.counts.get("batchCallsSubmitted", 0) == submitted
    assert sum(len(fake.batch_api.submitted_lines(job)) for job in fake.batch_api.jobs) == submitted


def test_an_answer_whose_claim_was_lost_while_the_job_was_applied_is_not_written(fake, mongo, db, settings):
    add_calls(db, 10)
    process(db, settings)
    fake.batch_api.complete()
    requeued = []

    def reanalyze_c1_meanwhile(collection, method):
        # While the job's first answer is written to the CRM, a person starts a new round of c1:
        # the job's answer for c1 belongs to a claim that is gone.
        if collection == "contacts" and not requeued:
            requeued.append(requeue(db, call_id="c1"))

    hooked = HookedClient(mongo, reanalyze_c1_meanwhile)["callsync_test"]
    recorder = process(hooked, settings, lane_only=True)
    assert requeued == [1] and recorder.counts["claimLost"] == 1
    assert db.activities.count_documents({"callId": "c1"}) == 0
    assert not call(db, "c1")["processed"] and "analysis" not in call(db, "c1")
    assert all(doc["processed"] for doc in calls(db, *(c for c in OLDEST if c != "c1")))
