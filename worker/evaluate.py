"""`main.py evaluate`: the configured analyzer (Groq when a key is set, the offline heuristic
otherwise) run over the labelled call set, its tags and lead statuses compared with the labels.
Needs no MongoDB and no Bolna key."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services.analyzer.pacing import Deadline, DeadlineExceeded
from services.analyzer.groq_analyzer import GroqAnalyzer, LlmFailure, LlmUnavailable
from services.analyzer.heuristic import heuristic_analysis
from services.analyzer.schema import HEURISTIC_MODEL, Usage, estimated_cost
from utils.clock import utcnow
from utils.config import Settings
from worker.evaluation_report import Outcome, build_report, render_report
from services.analyzer.labelled_set import LABEL_TAGS, DatasetError, LabelledCall, load_labelled_calls

# HTTP requests the evaluation may make per call, retries included: room to wait out rate
# limits (each wait is bounded by the call's own deadline) without an endless run.
REQUESTS_PER_CALL = 10


@dataclass(frozen=True)
class _Judge:
    """One analyzer as the evaluation sees it: a name, a model, and a verdict per call."""
    name: str
    model: str
    judge: Callable[[LabelledCall], Outcome]
    cost: Callable[[Usage], float | None]  # None: the model has no price


def run_evaluation(settings: Settings, args) -> int:
    path = Path(args.dataset) if args.dataset else None
    try:
        calls = load_labelled_calls(path) if path else load_labelled_calls()
    except DatasetError as exc:
        print(f"callsync: {exc}", file=sys.stderr)
        return 2
    calls = calls[:args.limit] if args.limit else calls
    # The labels use the default tags: the analyzer is asked for those, whatever ANALYSIS_TAGS says.
    judge = _choose_judge(settings.with_overrides(analysis_tags=LABEL_TAGS), len(calls))
    print(f"evaluating {len(calls)} labelled call(s) with {judge.name} ({judge.model})", file=sys.stderr)
    outcomes: list[Outcome] = []
    try:
        for call in calls:
            outcomes.append(judge.judge(call))
    except LlmUnavailable as exc:
        print(f"callsync: evaluation stopped after {len(outcomes)} of {len(calls)} call(s): "
              f"the LLM is unavailable: {exc}", file=sys.stderr)
        return 1
    total = Usage(sum(o.usage.prompt_tokens for o in outcomes), sum(o.usage.completion_tokens for o in outcomes))
    report = build_report(outcomes, analyzer=judge.name, model=judge.model, dataset=_shown(path),
                          usage=total, cost=judge.cost(total))
    print(json.dumps(report) if args.json else render_report(report))
    return 0


def _choose_judge(settings: Settings, calls: int) -> _Judge:
    if settings.groq_api_keys:
        return _groq_judge(settings, calls)
    return _heuristic_judge(settings)


def _heuristic_judge(settings: Settings) -> _Judge:
    # Analyzed minutes after the call, as the daemon does: the call's age is zero days.
    now = utcnow()

    def judge(call: LabelledCall) -> Outcome:
        analysis = heuristic_analysis(call.transcript, now, now, settings.analysis_tags)
        return Outcome(call, analysis.tag, analysis.lead_status, Usage())

    return _Judge("heuristic", HEURISTIC_MODEL, judge, cost=lambda usage: 0.0)


def _groq_judge(settings: Settings, calls: int) -> _Judge:
    llm = GroqAnalyzer(settings)
    llm.begin_run(REQUESTS_PER_CALL * calls)
    price = settings.llm_prices.get(llm.model)

    def judge(call: LabelledCall) -> Outcome:
        """LlmUnavailable is not caught: it is no answer about this call, and ends the run."""
        try:
            answer = llm.analyze(call.transcript, Deadline(settings.llm_batch_deadline_seconds))
        except LlmFailure as exc:
            return Outcome(call, None, None, exc.usage, failure=str(exc))
        except DeadlineExceeded as exc:
            return Outcome(call, None, None, Usage(), failure=f"deadline: {exc}")
        return Outcome(call, answer.analysis.tag, answer.analysis.lead_status, answer.usage)

    return _Judge("groq", llm.model, judge, cost=lambda usage: estimated_cost(usage, price))


def _shown(path: Path | None) -> str:
    if path is None:
        return "evaluation/labelled_calls.jsonl"
    return str(path)
