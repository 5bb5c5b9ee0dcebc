"""Where an analysis places a contact in its pipeline, and what may stop the move. Pure rules:
services/analyzer/write_back.py applies them.

Routing, first rule that gives a stage: (1) the call's outcome: won (Purchased, booked, WON) to
the WON stage, lost (Not_Interested, LOST) to the LOST stage; (2) the open stage (LEAD,
IN_PROGRESS) whose score range holds the lead score; (3) the stage named by the model's
recommendation; (4) the open stage whose range's midpoint is nearest the score.

Protection: a contact in a WON stage leaves it only by a person's hand; one scored 80 or more is
never moved to a stage starting below 50, one scored 50 or more never below 20.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.pipeline import SKIP_EXISTING, Pipeline, Stage

WON_OUTCOMES = frozenset({"purchased", "booked", "won"})
LOST_OUTCOMES = frozenset({"not_interested", "not interested", "lost"})
# (score at least, lowest stage minimum allowed)
DOWNGRADE_FLOORS = ((80, 50), (50, 20))

PLACED, MOVED, KEPT, BLOCKED, REVIEW = "placed", "moved", "kept", "blocked", "review"


@dataclass(frozen=True)
class Route:
    stage: Stage
    rule: str  # status | score_range | recommendation | nearest_midpoint


@dataclass(frozen=True)
class StageDecision:
    action: str  # placed | moved | kept | blocked | review
    route: Route | None
    reason: str
    current: Stage | None = None

    @property
    def changes_stage(self) -> bool:
        return self.action in (PLACED, MOVED)


def route(pipeline: Pipeline, *, score: int, tag: str | None, lead_status: str | None,
          recommended: str | None) -> Route:
    outcome = {(tag or "").casefold(), (lead_status or "").casefold()}
    for outcomes, stage_type in ((WON_OUTCOMES, "WON"), (LOST_OUTCOMES, "LOST")):
        if outcome & outcomes and (stage := pipeline.of_type(stage_type)) is not None:
            return Route(stage, "status")
    open_stages = [stage for stage in pipeline.stages if stage.open]
    for stage in open_stages:
        if stage.holds(score):
            return Route(stage, "score_range")
    if (stage := pipeline.named(recommended)) is not None:
        return Route(stage, "recommendation")
    candidates = open_stages or list(pipeline.stages)
    return Route(min(candidates, key=lambda stage: abs(stage.midpoint - score)), "nearest_midpoint")


def decide(pipeline: Pipeline, contact: dict, analysis: dict, min_confidence: int) -> StageDecision:
    """`contact`: as stored before this analysis (its `stage` and `leadScore`); `analysis`: the
    attempt's `calls.analysis` with result fields."""
    current_stage = contact.get("stage") or {}
    if current_stage and current_stage.get("pipelineId") != pipeline.id:
        return StageDecision(KEPT, None, f"the contact is staged in another pipeline ({current_stage.get('pipelineId')})")
    current = pipeline.stage(current_stage.get("id"))
    target = route(pipeline, score=analysis["leadScore"], tag=analysis["tag"], lead_status=analysis["leadStatus"],
                   recommended=analysis.get("recommendedStage"))
    if current is not None and pipeline.update_mode == SKIP_EXISTING:
        return StageDecision(KEPT, target, "the pipeline places only contacts without a stage (SKIP_EXISTING)", current)
    if current is not None and target.stage.id == current.id:
        return StageDecision(KEPT, target, "already in this stage", current)
    if analysis["confidence"] < min_confidence:
        return StageDecision(REVIEW, target, f"confidence {analysis['confidence']} is below {min_confidence}", current)
    blocked = _protection(current, contact.get("leadScore"), target.stage)
    if blocked is not None:
        return StageDecision(BLOCKED, target, blocked, current)
    return StageDecision(MOVED if current is not None else PLACED, target, f"rule {target.rule}", current)


def recommendation(pipeline: Pipeline, *, score: int, tag: str | None, lead_status: str | None) -> str:
    """The offline heuristic's stage: what the routing rules give its own score and tag."""
    return route(pipeline, score=score, tag=tag, lead_status=lead_status, recommended=None).stage.name


def _protection(current: Stage | None, score: object, target: Stage) -> str | None:
    if current is not None and current.type == "WON":
        return f"the contact is in {current.name} (WON), which only a person can change"
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        return None
    for at_least, floor in DOWNGRADE_FLOORS:
        if score >= at_least and target.minimum < floor:
            return (f"a contact scored {score} (>= {at_least}) is not moved to {target.name}, "
                    f"which starts below {floor}")
    return None
