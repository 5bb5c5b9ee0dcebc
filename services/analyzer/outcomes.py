"""One attempt's outcome written back, the same way by both lanes (the synchronous `batch.py`
and the Batch API's `batch_api.py`): the CRM first, then the call, by the holder of its claim
only; and the counts a run record keeps of it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from pymongo.database import Database

from models.pipeline import Pipeline
from models.stage_routing import recommendation
from services.analyzer.claims import MAX_ATTEMPTS, CallQueue, Claim
from services.analyzer.contacts import record_decision
from services.analyzer.heuristic import heuristic_analysis
from services.analyzer.pricing import estimated_cost
from services.analyzer.schema import SHORT_TRANSCRIPT, Analysis, Usage, analysis_document
from services.analyzer.staging import CrmRules
from services.database import PIPELINES
from services.pipelines import PipelineCatalog
from services.run_records import RunRecorder
from utils.clock import utcnow
from utils.config import Settings

# Claims that may resume a settled decision past MAX_ATTEMPTS (its CRM write cut off again).
SETTLED_RESUMES = 2
ABANDONED = "abandoned: the last allowed attempt did not finish (its process stopped)"
UNAPPLIED = (f"settled, but its CRM write did not succeed in {MAX_ATTEMPTS + SETTLED_RESUMES} attempts; "
             "the decision is kept on the call")


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed call; counted on the run record by the batch's thread."""
    call_id: str
    status: str  # ok | failed | skipped | released | claim_lost | crashed
    error: str | None = None
    used_fallback: bool = False
    usage: Usage = Usage()
    cost_usd: float | None = 0.0  # None: tokens of a model without a price
    has_contact: bool = True
    # A crash's exception, for the traceback of its one log line (a bug; never a driver error,
    # whose text can quote document values).
    exception: BaseException | None = None


class OutcomeWriter:
    def __init__(self, db: Database, queue: CallQueue, settings: Settings):
        self._db = db
        self.queue = queue
        self._settings = settings
        self.rules = CrmRules(PipelineCatalog(db[PIPELINES]), settings.auto_assign_min_confidence)

    def pipeline_for(self, call: dict) -> Pipeline | None:
        """The call's pipeline, whose stages the analysis recommends one of (None: no pipeline)."""
        return self.rules.pipeline_for(call)

    def finish(self, claim: Claim, analysis: dict, *, discount: float = 0.0) -> Outcome:
        """`analysis`: `calls.analysis` of the attempt; `discount`: off the price (a Batch API
        job's). An analysis with a result is settled on the call first, under the claim: only then
        is it written to the CRM, so a holder whose claim was lost writes nothing. A process that
        dies after settling leaves the call claimed and settled; the retake `resume`s it."""
        usage = Usage(analysis["usage"]["promptTokens"], analysis["usage"]["completionTokens"])
        cost = analysis["usage"]["costUsd"] = self._cost(usage, discount)
        if not _has_result(analysis):  # nothing for the CRM: processed in one write
            if not self.queue.finish(claim, analysis):
                return Outcome(claim.call_id, "claim_lost", usage=usage, cost_usd=cost)
            return _outcome(claim, analysis, usage, cost, has_contact=True)
        if not self.queue.settle(claim, analysis):
            return Outcome(claim.call_id, "claim_lost", usage=usage, cost_usd=cost)
        return self._apply(claim, analysis, usage, cost)

    def without_llm(self, claim: Claim, now: datetime) -> Outcome | None:
        """The outcome of a claim that needs no request, the same in both lanes: a settled
        decision resumed, a call past MAX_ATTEMPTS abandoned, a transcript too short to analyze.
        None: the call is to be analyzed."""
        if claim.settled is not None:
            return self.resume(claim)  # decided already: only its CRM write is left
        if claim.attempt > MAX_ATTEMPTS:
            # No fallback either: whatever stopped the previous attempts may be this call.
            return self.finish(claim, analysis_document("failed", attempted_at=now, error=ABANDONED))
        if len((claim.call.get("transcript") or "").strip()) < self._settings.min_transcript_chars:
            return self.finish(claim, analysis_document("skipped", attempted_at=now, skipped=SHORT_TRANSCRIPT))
        return None

    def resume(self, claim: Claim) -> Outcome:
        """Write the decision an earlier holder settled (`claim.settled`) and stopped before
        seeing through: the CRM write is idempotent per call and round, so whatever of it the
        earlier holder did is neither lost nor doubled. No new analysis, no new cost.

        Resumes count against the attempts too: a CRM write that fails every time would
        otherwise be retried under every later claim for ever. Past the bound the call is
        finished failed, the settled decision kept on it with the reason."""
        if claim.attempt <= MAX_ATTEMPTS + SETTLED_RESUMES:
            return self._apply(claim, claim.settled, Usage(), 0.0)
        if not self.queue.finish(claim, {**claim.settled, "status": "failed", "error": UNAPPLIED}):
            return Outcome(claim.call_id, "claim_lost")
        return Outcome(claim.call_id, "failed", error=UNAPPLIED)

    def _apply(self, claim: Claim, analysis: dict, usage: Usage, cost: float | None) -> Outcome:
        has_contact = record_decision(self._db, claim.call, analysis, utcnow(), self.rules)
        if not self.queue.finish(claim):
            # Retaken while the CRM was written: the new holder applies the same settled decision.
            return Outcome(claim.call_id, "claim_lost", usage=usage, cost_usd=cost)
        return _outcome(claim, analysis, usage, cost, has_contact=has_contact)

    def fallback(self, transcript: str, call: dict, now: datetime) -> Analysis:
        """The offline heuristic's analysis: for no key, and for a failed LLM attempt. Where the
        call has a pipeline, it recommends the stage its own score and tag route to."""
        analysis = heuristic_analysis(transcript, call.get("callAt"), now, self._settings.analysis_tags)
        pipeline = self.pipeline_for(call)
        if pipeline is None:
            return analysis
        stage = recommendation(pipeline, score=analysis.lead_score, tag=analysis.tag, lead_status=analysis.lead_status)
        return replace(analysis, recommended_stage=stage)

    def _cost(self, usage: Usage, discount: float) -> float | None:
        # By the LLM's price even when the stored result is the fallback's: an answer that
        # failed validation was still billed.
        if not (usage.prompt_tokens or usage.completion_tokens):
            return 0.0
        return estimated_cost(usage, self._settings.llm_prices.get(self._settings.groq_model), discount=discount)


def _outcome(claim: Claim, analysis: dict, usage: Usage, cost: float | None, *, has_contact: bool) -> Outcome:
    return Outcome(claim.call_id, analysis["status"], error=analysis["error"], used_fallback=analysis["usedFallback"],
                   usage=usage, cost_usd=cost, has_contact=has_contact)


def _has_result(analysis: dict) -> bool:
    """Skips and abandoned attempts carry no result fields, so there is nothing to apply."""
    return "summary" in analysis


# Outcome status -> its run-record counter. worker/health.py labels its counters by the same
# mapping, so the metrics say exactly what the run records say.
OUTCOME_COUNTERS = {"ok": "analyzed", "failed": "failed", "skipped": "skipped", "released": "released",
                    "claim_lost": "claimLost", "crashed": "crashed"}


def record_outcome(outcome: Outcome, recorder: RunRecorder) -> None:
    recorder.add(OUTCOME_COUNTERS[outcome.status])
    recorder.add("fallback", int(outcome.used_fallback))
    recorder.add("noContact", int(not outcome.has_contact))
    recorder.add("promptTokens", outcome.usage.prompt_tokens)
    recorder.add("completionTokens", outcome.usage.completion_tokens)
    if outcome.cost_usd is None:
        recorder.add("unpricedAnalyses")
    else:
        recorder.add("costUsd", outcome.cost_usd)
    if outcome.status in ("failed", "crashed"):
        recorder.error(f"analysis of call {outcome.call_id} {outcome.status}: {outcome.error}",
                       code=f"analysis_{outcome.status}", call_id=outcome.call_id, exc_info=outcome.exception)
