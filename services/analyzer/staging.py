"""The pipeline side of an analysis: the stage change it makes to a contact, and the audit of it
(an activity per placement, move, blocked move and held-back field; a review entry where the
analysis was not sure enough to move anyone)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pymongo import DeleteOne, UpdateOne
from pymongo.database import Database

from models.locks import HELD_BACK
from models.pipeline import Pipeline
from models.stage_routing import BLOCKED, REVIEW, StageDecision, decide
from services.database import STAGE_REVIEWS
from services.pipelines import PipelineCatalog

STAGE_CHANGE, STAGE_BLOCKED = "stage_change", "stage_blocked"


@dataclass(frozen=True)
class CrmRules:
    """What routing needs beyond the analysis: the CRM's pipelines and the confidence below which
    a person reviews the stage instead."""
    pipelines: PipelineCatalog
    min_confidence: int

    def pipeline_for(self, call: dict) -> Pipeline | None:
        return self.pipelines.for_agent(call.get("agentId"))

    def decide(self, call: dict, contact: dict | None, analysis: dict) -> tuple[Pipeline, StageDecision] | None:
        pipeline = self.pipeline_for(call)
        if pipeline is None:
            return None
        return pipeline, decide(pipeline, contact or {}, analysis, self.min_confidence)


def stage_change(pipeline: Pipeline, decision: StageDecision, call: dict, now: datetime) -> dict:
    """The contact's `stage` field after a placement or move."""
    return {"stage": {**decision.route.stage.document(), "pipelineId": pipeline.id, "rule": decision.route.rule,
                      "callId": call["callId"], "at": now}}


def audit(db: Database, *, contact_id: object, call: dict, analysis: dict, staged: tuple[Pipeline, StageDecision] | None,
          held: dict, applies: bool, now: datetime) -> list:
    """The activity writes of one decision (and its review entry, written here): keyed by call,
    type and round, so a retaken attempt rewrites its own, and a stage activity an earlier plan
    of this round made that this one does not (the contact changed before it was written) is
    removed. Written before the contact: what a crash after the contact write would lose is
    already there. `applies`: False when the contact follows a newer call (no stage audit)."""
    base = {"contactId": contact_id, "customerPhone": call.get("customerPhone"), "at": now,
            "confidence": analysis["confidence"], "model": analysis["model"], "usedFallback": analysis["usedFallback"]}
    key = {"callId": call["callId"], "round": call.get("analysisRound", 0)}
    writes = {}
    if staged is not None and applies:
        pipeline, decision = staged
        stage = {"pipelineId": pipeline.id, "reason": decision.reason,
                 "rule": decision.route.rule if decision.route else None,
                 "from": decision.current.document() if decision.current else None,
                 "to": decision.route.stage.document() if decision.route else None}
        if decision.changes_stage and "stage" not in held:
            writes[STAGE_CHANGE] = {**base, **stage, "action": decision.action}
        elif decision.action == BLOCKED:
            writes[STAGE_BLOCKED] = {**base, **stage}
        elif decision.action == REVIEW:
            _review(db, key, base, stage, analysis)
    if held and applies:
        writes[HELD_BACK] = {**base, "fields": dict(held), "reason": "locked by a person"}
    operations: list = [UpdateOne({**key, "type": kind}, {"$set": fields}, upsert=True)
                        for kind, fields in writes.items()]
    # Held-back entries are left: a customer's (services/writers.py) shares the key, and
    # an entry that says what a lock kept out records no change.
    return operations + [DeleteOne({**key, "type": kind}) for kind in (STAGE_CHANGE, STAGE_BLOCKED) if kind not in writes]


def _review(db: Database, key: dict, base: dict, stage: dict, analysis: dict) -> None:
    """Open for a person to accept or dismiss in the front end; a retake leaves their answer."""
    db[STAGE_REVIEWS].update_one(key, {
        "$set": {**base, "pipelineId": stage["pipelineId"], "currentStage": stage["from"],
                 "suggestedStage": stage["to"], "rule": stage["rule"], "reason": stage["reason"],
                 "leadScore": analysis["leadScore"], "reasoning": analysis["reasoning"]},
        "$setOnInsert": {"status": "open", "createdAt": base["at"]}}, upsert=True)
