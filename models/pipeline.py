"""Sales pipelines as the CRM front end writes them (`pipelines`; the daemon only reads them):
ordered stages, each of a type, with a score range given or derived from its type; and where an
analysis places a contact in its pipeline, and what may stop the move. Pure rules:
services/analyzer/write_back.py applies them.

Routing, first rule that gives a stage: (1) the call's outcome: won (Purchased, booked, WON) to
the WON stage, lost (Not_Interested, LOST) to the LOST stage; (2) the open stage (LEAD,
IN_PROGRESS) whose score range holds the lead score; (3) the stage named by the model's
recommendation; (4) the open stage whose range's midpoint is nearest the score.

Protection: a contact in a WON stage leaves it only by a person's hand; one scored 80 or more is
never moved to a stage starting below 50, one scored 50 or more never below 20. A first placement
(no stage yet, or one this pipeline no longer has) is no downgrade: the route alone decides it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STAGE_TYPES = ("LEAD", "IN_PROGRESS", "WON", "LOST", "ARCHIVED")
# Where a stage names no range: what its type usually holds.
DERIVED_RANGES = {"LEAD": (0, 30), "IN_PROGRESS": (31, 80), "WON": (81, 100), "LOST": (0, 20), "ARCHIVED": (0, 100)}
# Stages a score may lead to; WON and LOST are outcomes (reached by the call's outcome or the
# model's explicit recommendation), ARCHIVED is a person's decision.
OPEN_TYPES = ("LEAD", "IN_PROGRESS")
SKIP_EXISTING, UPDATE_EXISTING = "SKIP_EXISTING", "UPDATE_EXISTING"
UPDATE_MODES = (SKIP_EXISTING, UPDATE_EXISTING)


class MalformedPipeline(ValueError):
    """A pipeline document the daemon cannot route by; the message names what is wrong."""


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    type: str
    minimum: int
    maximum: int
    description: str = ""

    @property
    def open(self) -> bool:
        return self.type in OPEN_TYPES

    @property
    def midpoint(self) -> float:
        return (self.minimum + self.maximum) / 2

    def holds(self, score: int) -> bool:
        return self.minimum <= score <= self.maximum

    def document(self) -> dict:
        """How a contact stores its stage."""
        return {"id": self.id, "name": self.name, "type": self.type}


@dataclass(frozen=True)
class Pipeline:
    id: str
    name: str
    agent_ids: tuple[str, ...]  # empty: every agent
    update_mode: str
    stages: tuple[Stage, ...]

    def stage(self, stage_id: str | None) -> Stage | None:
        return next((stage for stage in self.stages if stage.id == stage_id), None)

    def of_type(self, stage_type: str) -> Stage | None:
        return next((stage for stage in self.stages if stage.type == stage_type), None)

    def named(self, name: str | None) -> Stage | None:
        if not isinstance(name, str):
            return None
        return next((stage for stage in self.stages if stage.name.casefold() == name.strip().casefold()), None)


def parse_pipeline(document: dict[str, Any]) -> Pipeline:
    stages = document.get("stages")
    if not isinstance(stages, list) or not stages:
        raise MalformedPipeline("it has no stages")
    parsed = tuple(_stage(item, number) for number, item in enumerate(stages, 1))
    if len({stage.id for stage in parsed}) != len(parsed):
        raise MalformedPipeline("two stages share an id")
    mode = document.get("updateMode") or SKIP_EXISTING
    if mode not in UPDATE_MODES:
        raise MalformedPipeline(f"updateMode {mode!r} is not one of {', '.join(UPDATE_MODES)}")
    agents = document.get("agentIds") or ()
    if not isinstance(agents, (list, tuple)) or not all(isinstance(agent, str) for agent in agents):
        raise MalformedPipeline("agentIds must be a list of agent ids")
    return Pipeline(str(document.get("_id")), str(document.get("name") or document.get("_id")), tuple(agents),
                    mode, parsed)


def pipeline_for(agent_id: str | None, pipelines: list[Pipeline]) -> Pipeline | None:
    """The pipeline of a call's agent: one naming the agent, else one for every agent."""
    named = [pipeline for pipeline in pipelines if agent_id in pipeline.agent_ids]
    return (named or [pipeline for pipeline in pipelines if not pipeline.agent_ids] or [None])[0]


def _stage(item: Any, number: int) -> Stage:
    if not isinstance(item, dict) or not str(item.get("id") or "").strip() or not str(item.get("name") or "").strip():
        raise MalformedPipeline(f"stage {number} needs an id and a name")
    kind = item.get("type")
    if kind not in STAGE_TYPES:
        raise MalformedPipeline(f"stage {number} has type {kind!r}, not one of {', '.join(STAGE_TYPES)}")
    low, high = _range(item.get("scoreRange"), kind, number)
    return Stage(str(item["id"]), str(item["name"]).strip(), kind, low, high, str(item.get("description") or ""))


def _range(value: Any, kind: str, number: int) -> tuple[int, int]:
    if value is None:
        return DERIVED_RANGES[kind]
    low, high = (value.get("min"), value.get("max")) if isinstance(value, dict) else (None, None)
    if not all(isinstance(bound, (int, float)) and not isinstance(bound, bool) for bound in (low, high)) \
            or not 0 <= low <= high <= 100:
        raise MalformedPipeline(f"stage {number}'s scoreRange must be {{min, max}} within 0-100")
    return round(low), round(high)


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
          recommended: str | None = None) -> Route:
    """`recommended`: the model's stage; none for the offline heuristic's own recommendation."""
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


def _protection(current: Stage | None, score: object, target: Stage) -> str | None:
    # The score floors guard a stage a contact holds; a contact scored high by an analysis that
    # placed it nowhere (a review, a call before the pipeline existed) has nothing to fall from.
    if current is None:
        return None
    if current.type == "WON":
        return f"the contact is in {current.name} (WON), which only a person can change"
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        return None
    for at_least, floor in DOWNGRADE_FLOORS:
        if score >= at_least and target.minimum < floor:
            return (f"a contact scored {score} (>= {at_least}) is not moved to {target.name}, "
                    f"which starts below {floor}")
    return None
