"""One run of phase 2 (not the Batch API lane, `batch_api.py`): claim up to `llm_calls_per_run`
calls, analyze them a few at a time, write every outcome back, and stop starting new calls at the
run's deadline (LLM_BATCH_DEADLINE_SECONDS)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from pymongo.database import Database
from pymongo.errors import PyMongoError

from services.analyzer.claims import CallQueue, Claim
from services.analyzer.groq_analyzer import BudgetSpent, GroqAnalyzer, LlmFailure, LlmUnavailable
from services.analyzer.pacing import Deadline, DeadlineExceeded
from services.analyzer.write_back import Outcome, OutcomeWriter, record_outcome
from services.run_records import RunRecorder
from utils.clock import utcnow
from utils.config import Settings
from utils.logging import in_log_context


# A claim must outlive any attempt of a live process: attempts end by the batch deadline
# (requests are cut to the time left), plus one request timeout and room for the write-back.
LEASE_MARGIN_SECONDS = 60.0


def claim_lease_seconds(settings: Settings) -> float:
    return settings.llm_batch_deadline_seconds + settings.llm_timeout_seconds + LEASE_MARGIN_SECONDS


class AnalysisRun:
    def __init__(self, db: Database, queue: CallQueue, settings: Settings, llm: GroqAnalyzer | None,
                 stop: threading.Event | None = None):
        """`llm`: None analyzes every call with the offline heuristic."""
        self.queue = queue
        self.outcomes = OutcomeWriter(db, queue, settings)  # shared with the Batch API lane
        self._stop = stop  # set on SIGTERM: start no new call, release those cut off
        self._settings = settings
        self.llm = llm
        self._unavailable: list[LlmUnavailable] = []  # this run's reasons the LLM cannot be used

    def run(self, recorder: RunRecorder) -> None:
        limit = self._settings.llm_calls_per_run
        if limit == 0 or not self.queue.any_claimable():
            return
        deadline = Deadline(self._settings.llm_batch_deadline_seconds, self._stop)
        if self.llm is not None:
            self.llm.begin_run(self._settings.llm_requests_per_run)
        self._unavailable = []
        workers = min(self._settings.llm_concurrency, limit)
        queue_error = None
        finished = 0
        # Set by the first slot that finds the queue empty: the slots after it do not ask again
        # (a steady run over an empty queue made one empty claim per slot, half its round trips).
        drained = threading.Event()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyzer") as pool:
            slots = [pool.submit(in_log_context(self._fill_slot, deadline, drained)) for _ in range(limit)]
            for slot in as_completed(slots):
                outcomes, error = slot.result()
                for outcome in outcomes:
                    record_outcome(outcome, recorder)
                    finished += outcome.status in ("ok", "failed")
                queue_error = queue_error or error
        if queue_error is not None:
            # Once per run: when the database is away, every slot meets the same error.
            recorder.error(queue_error, code="analysis_queue_error")
        if any(isinstance(reason, BudgetSpent) for reason in self._unavailable):
            recorder.add("llmBudgetSpent")  # counted apart: an operator raises the budget, or waits
        if self._unavailable:
            message = f"LLM unavailable: {self._unavailable[-1]}; calls not analyzed stay queued for a later run"
            if not finished:
                raise LlmUnavailable(message)  # nothing could be analyzed: the run failed
            recorder.error(message, code="llm_unavailable")

    def _fill_slot(self, deadline: Deadline, drained: threading.Event) -> tuple[list[Outcome], str | None]:
        """Analyze one call. Short transcripts met on the way are skipped without using up the
        slot: they cost no LLM request, and a backlog of unanswered calls must not stall the queue.

        Returns the outcomes and, when the queue itself failed (a claim could not be made), the
        error's type (a driver error's text can quote document values such as a phone number):
        the outcomes gathered before it must still reach the run record."""
        outcomes: list[Outcome] = []
        try:
            while not deadline.reached and not self._unavailable and not drained.is_set():
                claim = self.queue.claim_next()
                if claim is None:
                    drained.set()
                    break
                try:
                    outcome = self._analyze(claim, deadline)
                except Exception as exc:
                    # One bad call must not end the run: its lease expires, it is retaken once. Logged
                    # once, as the run's error; a traceback for bugs, while a driver error's text can
                    # quote document values (transcripts).
                    outcome = Outcome(claim.call_id, "crashed", error=type(exc).__name__,
                                      exception=None if isinstance(exc, PyMongoError) else exc)
                outcomes.append(outcome)
                if outcome.status != "skipped":
                    break
        except Exception as exc:  # the slot ends; the other slots and the run go on
            return outcomes, type(exc).__name__
        return outcomes, None

    def _analyze(self, claim: Claim, deadline: Deadline) -> Outcome:
        now = utcnow()
        decided = self.outcomes.without_llm(claim, now)
        if decided is not None:
            return decided
        if self.llm is None:
            return self.outcomes.finish_attempt(claim, None, now)
        try:
            result = self.llm.analyze((claim.call.get("transcript") or "").strip(), deadline,
                                      self.outcomes.pipeline_for(claim.call))
        except (DeadlineExceeded, LlmUnavailable) as exc:
            if isinstance(exc, LlmUnavailable):
                # Not the call's fault: it keeps its place in the queue, and no slot claims another.
                self._unavailable.append(exc)
            self.queue.release(claim)
            return Outcome(claim.call_id, "released")
        except LlmFailure as failure:
            result = failure
        return self.outcomes.finish_attempt(claim, result, now)
