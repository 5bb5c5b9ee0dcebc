"""The Batch API lane (docs/analysis.md, "The Batch API lane"): a backlog larger than the
synchronous lane can clear in a day goes to Groq as batch jobs, and later runs poll them and write
their answers back with the synchronous lane's guarantees: a job's calls are claimed under the
job's token before anything is uploaded, an answer is written only while the call still holds
it, and calls a job did not answer go back to the queue. Jobs are tracked in `llm_batches`; any
replica may poll any job (a short poll lease keeps two from applying one at once)."""
from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import groq
from pymongo import ReturnDocument
from pymongo.collection import Collection

from models.pipeline import Pipeline
from services.analyzer.groq_analyzer import LlmAnswer, LlmFailure, error_code, read_completion
from services.analyzer.write_back import OutcomeWriter, record_outcome
from services.analyzer.prompt import completion_request
from services.run_records import RunRecorder
from utils.config import Settings

log = logging.getLogger(__name__)

# Long enough to build and upload a job; a process that dies meanwhile loses its claims this soon.
SUBMIT_LEASE_SECONDS = 15 * 60
# Beyond the completion window: Groq's last answers, and the next poll after them.
WINDOW_MARGIN_SECONDS = 3600
POLL_LEASE = timedelta(minutes=5)
# Groq takes input files of up to 100 MB; a job stops short of that.
MAX_INPUT_BYTES = 90 * 1024 * 1024
# Groq's batch states that are over; the others (validating, in_progress, finalizing, cancelling) wait.
FINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})
BATCH_ENDPOINT = "/v1/chat/completions"


class BatchApiLane:
    def __init__(self, jobs: Collection, outcomes: OutcomeWriter, settings: Settings, client: groq.Groq, owner: str):
        """`outcomes`: the synchronous lane's queue and write-back (and so its pipeline catalog)."""
        self._jobs = jobs
        self._queue = outcomes.queue
        self._outcomes = outcomes
        self._settings = settings
        self._client = client
        self._owner = owner
        self._clock = outcomes.queue.clock  # the server's: job times and claims compare alike

    def run(self, recorder: RunRecorder) -> None:
        for job in self._jobs.find({"status": "submitted"}, {"_id": 1}):
            self._poll(job["_id"], recorder)
        overflow = self._overflow()
        if overflow:
            self._submit(overflow, recorder)

    def _overflow(self) -> int:
        mode, per_run = self._settings.llm_batch_mode, self._settings.llm_calls_per_run
        if mode == "off":
            return 0
        waiting = self._queue.unclaimed()
        if mode == "auto":
            runs_a_day = 24 * 60 // self._settings.sync_interval_minutes
            if waiting <= per_run * runs_a_day:
                return 0
            waiting -= per_run  # the newest: this run's synchronous lane analyzes them within minutes
        return min(waiting, self._settings.llm_batch_api_max_calls)

    # -- submitting -------------------------------------------------------------------------------

    def _submit(self, count: int, recorder: RunRecorder) -> None:
        token = uuid.uuid4().hex
        self._jobs.insert_one({"_id": token, "status": "building", "owner": self._owner,
                               "createdAt": self._clock(), "model": self._settings.groq_model})
        claims = self._queue.claim_oldest(count, token, SUBMIT_LEASE_SECONDS)
        lines, sent = [], []
        size = 0
        for claim in claims:
            decided = self._outcomes.without_llm(claim, self._clock())
            if decided is not None:  # finished here, as the synchronous lane would: abandoned, or too short
                record_outcome(decided, recorder)
                continue
            request = completion_request((claim.call.get("transcript") or "").strip(), self._settings,
                                         self._outcomes.pipeline_for(claim.call))
            line = json.dumps({"custom_id": claim.call_id, "method": "POST", "url": BATCH_ENDPOINT, "body": request},
                              ensure_ascii=False).encode() + b"\n"
            if size + len(line) > MAX_INPUT_BYTES:
                self._queue.release(claim)  # the next job takes it
                continue
            lines.append(line)
            sent.append(claim.call_id)
            size += len(line)
        if not sent:
            self._jobs.delete_one({"_id": token})
            return
        try:
            upload = self._client.files.create(file=(f"callsync-{token}.jsonl", b"".join(lines)), purpose="batch")
            job = self._client.batches.create(input_file_id=upload.id, endpoint=BATCH_ENDPOINT,
                                              completion_window=self._settings.llm_batch_api_window,
                                              metadata={"callsync_job": token})
        except groq.APIError as exc:
            for claim in self._queue.held(sent, token):
                self._queue.release(claim)
            self._jobs.update_one({"_id": token}, {"$set": {"status": "not_submitted", "finishedAt": self._clock(),
                                                            "error": type(exc).__name__}})
            recorder.error(f"Groq Batch API: submitting {len(sent)} call(s) failed ({type(exc).__name__}); "
                           "they stay queued", code="llm_batch_submit_failed")
            return
        self._queue.extend(sent, token, self._settings.llm_batch_api_window_seconds + WINDOW_MARGIN_SECONDS)
        self._jobs.update_one({"_id": token}, {"$set": {
            "status": "submitted", "groqBatchId": job.id, "inputFileId": upload.id, "callIds": sent,
            "submittedAt": self._clock()}})
        recorder.add("batchJobsSubmitted")
        recorder.add("batchCallsSubmitted", len(sent))
        log.info("submitted %d call(s) to the Groq Batch API", len(sent), extra={"event": "llm_batch_submitted"})

    # -- polling ----------------------------------------------------------------------------------

    def _poll(self, token: str, recorder: RunRecorder) -> None:
        now = self._clock()
        job = self._jobs.find_one_and_update(
            {"_id": token, "status": "submitted", "$or": [{"pollUntil": None}, {"pollUntil": {"$lte": now}}]},
            {"$set": {"pollUntil": now + POLL_LEASE}}, return_document=ReturnDocument.AFTER)
        if job is None:
            return  # another replica is on it
        try:
            state = self._client.batches.retrieve(job["groqBatchId"])
            if state.status not in FINAL_STATES:
                self._jobs.update_one({"_id": token}, {"$set": {"groqStatus": state.status},
                                                       "$unset": {"pollUntil": ""}})
                return
            answers = read_answers(*(self._client.files.content(file_id).text()
                                     for file_id in (state.output_file_id, state.error_file_id) if file_id))
        except groq.APIError as exc:
            recorder.error(f"Groq Batch API: polling job {job['groqBatchId']} failed ({type(exc).__name__})",
                           code="llm_batch_poll_failed")
            return
        self._apply(job, state.status, answers, recorder)
        # The job's files hold masked transcripts and their analyses: once applied, Groq need not
        # keep them (docs/privacy.md). Best effort; Groq expires batch files by itself too.
        for file_id in filter(None, (job.get("inputFileId"), state.output_file_id, state.error_file_id)):
            try:
                self._client.files.delete(file_id)
            except groq.APIError as exc:
                log.info("could not delete Groq file %s: %s", file_id, type(exc).__name__)

    def _apply(self, job: dict, state: str, answers: dict, recorder: RunRecorder) -> None:
        released = 0
        for claim in self._queue.held(job["callIds"], job["_id"]):
            answer = answers.get(claim.call_id)
            if answer is None:
                self._queue.release(claim)  # not attempted: back to the queue, attempt not counted
                released += 1
                continue
            result = _attempt(answer, self._settings, self._outcomes.pipeline_for(claim.call))
            record_outcome(self._outcomes.finish_attempt(claim, result, self._clock(),
                                                         discount=self._settings.llm_batch_api_discount), recorder)
        self._jobs.update_one({"_id": job["_id"]}, {
            "$set": {"status": "finished", "groqStatus": state, "finishedAt": self._clock(),
                     "answered": len(answers), "released": released},
            "$unset": {"pollUntil": ""}})
        recorder.add("batchJobsFinished")
        recorder.add("batchReleased", released)
        if state != "completed":
            recorder.error(f"Groq Batch API job {job['groqBatchId']} ended {state}: {len(answers)} answered, "
                           f"{released} call(s) back in the queue", code=f"llm_batch_{state}")


def read_answers(*files: str) -> dict[str, dict]:
    """The lines of the output and error files, by call id; lines that are not JSON or carry no
    id are left out (their calls count as unanswered)."""
    answers = {}
    for line in (line for text in files for line in text.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            answers[item["custom_id"]] = item
    return answers


def _attempt(item: dict, settings: Settings, pipeline: Pipeline | None) -> LlmAnswer | LlmFailure:
    response = item.get("response") if isinstance(item.get("response"), dict) else {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    if item.get("error") or response.get("status_code") != 200:
        # Why, without Groq's text (it may quote the request).
        code = error_code(item.get("error") or body) or f"HTTP {response.get('status_code')}"
        return LlmFailure(f"Batch API: {body.get('model') or settings.groq_model}: request failed ({code})")
    try:
        return read_completion(body, settings, pipeline)
    except LlmFailure as failure:
        return LlmFailure(f"Batch API: {failure}", failure.usage)
