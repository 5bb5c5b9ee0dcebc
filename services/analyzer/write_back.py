"""One attempt's outcome written back, the same way by both lanes (the synchronous `run.py`
and the Batch API's `batch_api.py`), by the holder of the call's claim only: the decision settled
on the call, then the CRM, then the call marked processed; and the counts a run record keeps of it.

`record_decision` writes what a decision changes in the CRM: the contact (found by its
normalized phone, as customers are), its pipeline stage, and the `activities` entries recording it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from bson import ObjectId
from pymongo import DeleteOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from models.locks import HELD_ON_CONTACT, held_back_key, split_locked, suggestions, unlocked_guard
from models.pipeline import BLOCKED, REVIEW, Pipeline, StageDecision, decide, route
from services.analyzer.claims import MAX_ATTEMPTS, CallQueue, Claim
from services.analyzer.groq_analyzer import LlmAnswer, LlmFailure
from services.analyzer.heuristic import heuristic_analysis
from services.analyzer.schema import (HEURISTIC_MODEL, SHORT_TRANSCRIPT, Usage, analysis_document,
                                      estimated_cost)
from services.database import ACTIVITIES, CALLS, CONTACTS, PHONE_INDEX_KEYS, PIPELINES, STAGE_REVIEWS
from services.writers import bulk_upsert, records_by_phone
from services.pipelines import PipelineCatalog
from services.privacy import Eraser
from services.run_records import RunRecorder
from services.accounts.source import read_path
from utils.clock import utcnow
from utils.config import Settings
from utils.phone import Phone

# Claims that may resume a settled decision past MAX_ATTEMPTS (its CRM write cut off again).
SETTLED_RESUMES = 2
ABANDONED = "abandoned: the last allowed attempt did not finish (its process stopped)"
UNAPPLIED = (f"settled, but its CRM write did not succeed in {MAX_ATTEMPTS + SETTLED_RESUMES} attempts; "
             "the decision is kept on the call")
PAST_CONVERSATIONS_KEPT = 20
_CONTACT_FIELDS = ("tag", "leadScore", "leadStatus", "sentiment")
ACTIVITY_TYPE = "ai_analysis"
STAGE_CHANGE, STAGE_BLOCKED = "stage_change", "stage_blocked"
# Read, decide, write: a lock set or the contact created by another process between the read and
# the write sends the decision round again; more than a few rounds means something is wrong.
MAX_DECISIONS = 5
REVISION = "analysisRevision"  # counts the analyses written: a decision is made on one revision
DECIDED = "decided"  # receipts of the latest decisions written: {callId, round}
DECISIONS_KEPT = 100


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed call; counted on the run record by the run's thread."""
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
        self._pipelines = PipelineCatalog(db[PIPELINES])

    def pipeline_for(self, call: dict) -> Pipeline | None:
        return self._pipelines.for_agent(call.get("agentId"))

    def finish(self, claim: Claim, analysis: dict, *, discount: float = 0.0) -> Outcome:
        """`analysis`: `calls.analysis` of the attempt; `discount`: off the price (a Batch API
        job's). An analysis with a result is settled on the call first, under the claim: only then
        is it written to the CRM, so a holder whose claim was lost writes nothing. A process that
        dies after settling leaves the call claimed and settled; the retake resumes it."""
        usage = Usage(analysis["usage"]["promptTokens"], analysis["usage"]["completionTokens"])
        # By the LLM's price even when the stored result is the fallback's: an answer that
        # failed validation was still billed.
        cost = estimated_cost(usage, self._settings.llm_prices.get(self._settings.groq_model), discount=discount)
        analysis["usage"]["costUsd"] = cost
        if "summary" in analysis:
            if self.queue.settle(claim, analysis):
                return self._apply(claim, analysis, usage, cost)
        elif self.queue.finish(claim, analysis):  # a skip or an abandoned attempt, no result: one write
            return _outcome(claim, analysis, usage, cost, has_contact=True)
        return Outcome(claim.call_id, "claim_lost", usage=usage, cost_usd=cost)

    def without_llm(self, claim: Claim, now: datetime) -> Outcome | None:
        """The outcome of a claim that needs no request, the same in both lanes: a settled
        decision resumed, a call past MAX_ATTEMPTS abandoned, a transcript too short to analyze.
        None: the call is to be analyzed.

        A decision an earlier holder settled (`claim.settled`) and did not see through is written
        again: the CRM write is idempotent per call and round, so nothing of it is lost or doubled,
        at no new cost. Resumes count against the attempts (a CRM write that fails every time would
        be retried for ever): past the bound the call is finished failed, the decision kept on it."""
        if claim.settled is not None and claim.attempt <= MAX_ATTEMPTS + SETTLED_RESUMES:
            return self._apply(claim, claim.settled, Usage(), 0.0)
        if claim.settled is not None:
            if not self.queue.finish(claim, {**claim.settled, "status": "failed", "error": UNAPPLIED}):
                return Outcome(claim.call_id, "claim_lost")
            return Outcome(claim.call_id, "failed", error=UNAPPLIED)
        if claim.attempt > MAX_ATTEMPTS:
            # No fallback either: whatever stopped the previous attempts may be this call.
            return self.finish(claim, analysis_document("failed", attempted_at=now, error=ABANDONED))
        if len((claim.call.get("transcript") or "").strip()) < self._settings.min_transcript_chars:
            return self.finish(claim, analysis_document("skipped", attempted_at=now, skipped=SHORT_TRANSCRIPT))
        return None

    def _apply(self, claim: Claim, analysis: dict, usage: Usage, cost: float | None) -> Outcome:
        has_contact = record_decision(self._db, claim.call, analysis, utcnow(), self.pipeline_for(claim.call),
                                      self._settings.auto_assign_min_confidence)
        if not self.queue.finish(claim):
            # Retaken while the CRM was written: the new holder applies the same settled decision.
            return Outcome(claim.call_id, "claim_lost", usage=usage, cost_usd=cost)
        return _outcome(claim, analysis, usage, cost, has_contact=has_contact)

    def finish_attempt(self, claim: Claim, result: LlmAnswer | LlmFailure | None, now: datetime, *,
                       discount: float = 0.0) -> Outcome:
        """The LLM's analysis, as both lanes write it; else (`result` None: no LLM, or a failed
        attempt) the offline heuristic's, recommending where the call has a pipeline the stage its
        own score and tag route to."""
        if isinstance(result, LlmAnswer):
            return self.finish(claim, analysis_document("ok", attempted_at=now, model=result.model,
                                                        usage=result.usage, analysis=result.analysis),
                               discount=discount)
        call = claim.call
        analysis = heuristic_analysis((call.get("transcript") or "").strip(), call.get("callAt"), now,
                                      self._settings.analysis_tags)
        if (pipeline := self.pipeline_for(call)) is not None:
            analysis = replace(analysis, recommended_stage=route(
                pipeline, score=analysis.lead_score, tag=analysis.tag, lead_status=analysis.lead_status).stage.name)
        failed = {} if result is None else {"error": str(result), "usage": result.usage}
        return self.finish(claim, analysis_document("ok" if result is None else "failed", attempted_at=now,
                                                    model=HEURISTIC_MODEL, used_fallback=True, analysis=analysis,
                                                    **failed), discount=discount)


def _outcome(claim: Claim, analysis: dict, usage: Usage, cost: float | None, *, has_contact: bool) -> Outcome:
    return Outcome(claim.call_id, analysis["status"], error=analysis["error"], used_fallback=analysis["usedFallback"],
                   usage=usage, cost_usd=cost, has_contact=has_contact)


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


# -- the CRM -------------------------------------------------------------------------------------

class ContactContention(RuntimeError):
    """The contact changed under every attempt to write the analysis."""


def record_decision(db: Database, call: dict, analysis: dict, now: datetime, pipeline: Pipeline | None,
                    min_confidence: int) -> bool:
    """Apply a finished analysis (a `calls.analysis` document with result fields) to the call's
    contact and log it as activities (`audit`). False when the call has no customer number.
    With the `pipeline` of the call's agent, the analysis also places or moves the contact in it
    (models/pipeline.py; below `min_confidence` a person reviews the move). Fields a person locked
    are not written;
    what the analysis would have written is kept under `suggested` (models/locks.py). A retake
    finds the decision's receipt on the contact and writes nothing again; a re-analysis
    (`reanalyze` starts a new round) adds an activity."""
    if not call.get("customerPhone"):
        return False
    phone = Phone.stored(call["customerPhone"], bool(call.get("customerPhoneValid")))
    call_at = call.get("callAt") or now
    contact_id = _write(db, phone, call, analysis, pipeline, min_confidence, call_at, now)
    _remember_conversation(db[CONTACTS], contact_id, {
        "callId": call["callId"], "summary": analysis["summary"], "tag": analysis["tag"], "at": call_at,
    })
    stored = db[CALLS].find_one({"callId": call["callId"]}, {"erasedAt": 1, "_id": 0})
    if stored is not None and stored.get("erasedAt") is not None:
        # `main.py forget` stripped the call while it was analyzed, and its sweep may have run
        # before this decision landed. It marks the call before it removes contacts and
        # activities, so of its sweep and this one, one runs after this write.
        Eraser(db).sweep(phone)
        return False
    return True


def _write(db: Database, phone: Phone, call: dict, analysis: dict, pipeline: Pipeline | None, min_confidence: int,
           call_at: datetime, now: datetime) -> object:
    """Read the contact, decide (its stage too), log, write; again when it changed in between."""
    contacts = db[CONTACTS]
    for _ in range(MAX_DECISIONS):
        found = (records_by_phone(contacts, [phone]).get(phone.key) or [None])[0]
        if found is not None and receipt(call) in (found.get(DECIDED) or ()):
            return found["_id"]  # written by an attempt that stopped before it was seen through
        decision = decide(pipeline, found or {}, analysis, min_confidence) if pipeline else None
        # Unknowns (a tag the configuration lacks, an extra field the call did not mention) leave
        # what an earlier call found.
        changes = {name: analysis[name] for name in _CONTACT_FIELDS if analysis[name] is not None}
        changes.update({f"extra.{name}": value for name, value in analysis["extra"].items() if value is not None})
        if decision is not None and decision.changes_stage:
            changes["stage"] = {**decision.route.stage.document(), "pipelineId": pipeline.id,
                                "rule": decision.route.rule, "callId": call["callId"], "at": now}
        plan = plan_contact(found, changes, call_at)
        # A contact created by this write gets its id now, so the activities can name it first.
        contact_id = found["_id"] if found is not None else ObjectId()
        bulk_upsert(db[ACTIVITIES], audit(db, contact_id=contact_id, call=call, analysis=analysis,
                                          pipeline=pipeline, decision=decision, plan=plan, now=now))
        written = write_contact(contacts, phone, plan, call, contact_id=contact_id, call_at=call_at, now=now)
        if written is not None:
            return written
    raise ContactContention(f"the contact of call {call['callId']} kept changing while it was written")


def _remember_conversation(contacts: Collection, contact_id: object, entry: dict) -> None:
    """One entry per call: a re-analysis replaces its entry; otherwise append, keeping the newest."""
    replaced = contacts.update_one({"_id": contact_id, "pastConversations.callId": entry["callId"]},
                                   {"$set": {"pastConversations.$": entry}})
    if replaced.matched_count:
        return
    contacts.update_one(
        {"_id": contact_id, "pastConversations.callId": {"$ne": entry["callId"]}},
        {"$push": {"pastConversations": {"$each": [entry], "$sort": {"at": 1},
                                         "$slice": -PAST_CONVERSATIONS_KEPT}}},
    )


@dataclass(frozen=True)
class ContactPlan:
    """What a decision does to the contact as read (`found`, None: not created yet)."""
    found: dict | None
    allowed: dict  # field -> value written
    held: dict = field(default_factory=dict)  # field -> value a lock keeps out
    applies: bool = True  # False: the contact already follows a newer call; the decision is history

    def changes(self) -> dict:
        """Each field the write changes: {"from", "to"}."""
        if not self.applies:
            return {}
        return {name: {"from": read_path(self.found or {}, name), "to": value}
                for name, value in self.allowed.items() if read_path(self.found or {}, name) != value}


def receipt(call: dict) -> dict:
    return {"callId": call["callId"], "round": call.get("analysisRound", 0)}


def plan_contact(found: dict | None, changes: dict, call_at: datetime) -> ContactPlan:
    analyzed_at = (found or {}).get("analyzedCallAt")
    if isinstance(analyzed_at, datetime) and analyzed_at > call_at:
        return ContactPlan(found, {}, applies=False)
    allowed, held = split_locked(changes, (found or {}).get("locked") or ())
    # A lock holds back only what would differ from what the person set.
    held = {name: value for name, value in held.items() if read_path(found or {}, name) != value}
    return ContactPlan(found, allowed, held)


def write_contact(contacts: Collection, phone: Phone, plan: ContactPlan, call: dict, *, contact_id: object,
                  call_at: datetime, now: datetime) -> object | None:
    """Write `plan`; the contact's id (`contact_id` for one it creates). None when the contact
    changed since it was read (another analysis written, a lock set, the contact created by another
    process): read it again and decide again."""
    touched = {"lastAnalyzedAt": now, "updatedAt": now}
    found = plan.found
    if not plan.applies:
        # History only; no revision: nothing this decision was made on changes.
        contacts.update_one({"_id": found["_id"]}, {"$set": touched})
        return found["_id"]
    update = {"$set": {**plan.allowed, **suggestions(plan.held, call["callId"], now), **touched,
                       "analyzedCallAt": call_at},
              "$inc": {REVISION: 1},
              "$push": {DECIDED: {"$each": [receipt(call)], "$slice": -DECISIONS_KEPT}},
              "$setOnInsert": {"phoneValid": phone.valid, "createdAt": now}}
    # The contact exactly as the decision read it: what it says changed is what changes.
    revision = (found or {}).get(REVISION)
    # `$exists`, not `None`: an upsert would copy an equality into the new contact, and $inc it.
    condition = {REVISION: revision if revision is not None else {"$exists": False}, **unlocked_guard(plan.allowed)}
    if found is None:
        update["$setOnInsert"]["_id"] = contact_id
        try:
            written = contacts.find_one_and_update({"phone": phone.key, **condition}, update, upsert=True,
                                                   projection={"_id": 1}, hint=PHONE_INDEX_KEYS,
                                                   return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return None  # created by another process since the read (or locked): decide on it
        # Not ours when another process created the contact under this key since the read.
        return written["_id"] if written["_id"] == contact_id else None
    written = contacts.update_one({"_id": found["_id"], **condition}, update)
    return found["_id"] if written.matched_count else None


def audit(db: Database, *, contact_id: object, call: dict, analysis: dict, pipeline: Pipeline | None,
          decision: StageDecision | None, plan: ContactPlan, now: datetime) -> list:
    """The activity writes of one decision (and its review entry, written here): keyed by call,
    type and round, so a retaken attempt rewrites its own, and a stage activity an earlier plan
    of this round made that this one does not (the contact changed before it was written) is
    removed. Written before the contact: what a crash after the contact write would lose is
    already there. No stage audit when the contact follows a newer call (`plan.applies`)."""
    judged = {"confidence": analysis["confidence"], "model": analysis["model"], "usedFallback": analysis["usedFallback"]}
    base = {"contactId": contact_id, "customerPhone": call.get("customerPhone"), "at": now, **judged}
    key = receipt(call)
    writes = {ACTIVITY_TYPE: {
        "contactId": contact_id,
        "changes": plan.changes(),
        # False: the contact already follows a newer call; this decision is history only.
        "appliedToContact": plan.applies,
        "at": now,
        "summary": analysis["summary"],
        "reasoning": analysis["reasoning"],
        **judged,
        "analysisStatus": analysis["status"],
    }}
    if decision is not None and plan.applies:
        stage = {"pipelineId": pipeline.id, "reason": decision.reason,
                 "rule": decision.route.rule if decision.route else None,
                 "from": decision.current.document() if decision.current else None,
                 "to": decision.route.stage.document() if decision.route else None}
        if decision.changes_stage and "stage" not in plan.held:
            writes[STAGE_CHANGE] = {**base, **stage, "action": decision.action}
        elif decision.action == BLOCKED:
            writes[STAGE_BLOCKED] = {**base, **stage}
        elif decision.action == REVIEW:
            _review(db, key, base, stage, analysis)
    operations: list = [UpdateOne({**key, "type": kind}, {"$set": fields}, upsert=True)
                        for kind, fields in writes.items()]
    operations += [DeleteOne({**key, "type": kind}) for kind in (STAGE_CHANGE, STAGE_BLOCKED) if kind not in writes]
    # The contact's own entry (the customer's, services/writers.py, is keyed apart), or none: a
    # hold an earlier plan of this round made and this one does not was never written.
    held = held_back_key(key["callId"], key["round"], HELD_ON_CONTACT)
    if plan.held and plan.applies:
        return operations + [UpdateOne(held, {"$set": {**base, "fields": dict(plan.held),
                                                       "reason": "locked by a person"}}, upsert=True)]
    return operations + [DeleteOne(held)]


def _review(db: Database, key: dict, base: dict, stage: dict, analysis: dict) -> None:
    """Open for a person to accept or dismiss in the front end; a retake leaves their answer."""
    db[STAGE_REVIEWS].update_one(key, {
        "$set": {**base, "pipelineId": stage["pipelineId"], "currentStage": stage["from"],
                 "suggestedStage": stage["to"], "rule": stage["rule"], "reason": stage["reason"],
                 "leadScore": analysis["leadScore"], "reasoning": analysis["reasoning"]},
        "$setOnInsert": {"status": "open", "createdAt": base["at"]}}, upsert=True)
