"""`main.py evaluate`: the configured analyzer (Groq when a key is set, the offline heuristic
otherwise) run over the labelled call set, its tags and lead statuses compared with the labels,
the figures printed as JSON or as text (docs/analysis.md, "Measuring it")."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from services.analyzer.pacing import Deadline, DeadlineExceeded
from services.analyzer.groq_analyzer import GroqAnalyzer, LlmFailure, LlmUnavailable
from services.analyzer.heuristic import heuristic_analysis
from services.analyzer.labelled_set import (LABEL_TAGS, SPLITS, DatasetError, LabelledCall,
                                            load_labelled_calls)
from services.analyzer.schema import HEURISTIC_MODEL, LEAD_STATUSES, Usage, estimated_cost
from utils.clock import utcnow
from utils.config import Price, Settings
from utils.table import format_table

# HTTP requests the evaluation may make per call, retries included: room to wait out rate
# limits (each wait is bounded by the call's own deadline) without an endless run.
REQUESTS_PER_CALL = 10
FAILED = "(failed)"  # the predicted column of calls the analyzer gave no answer for


@dataclass(frozen=True)
class Outcome:
    call: LabelledCall
    tag: str
    status: str
    usage: Usage
    failure: str | None = None


def run_evaluation(settings: Settings, args) -> int:
    try:
        calls = load_labelled_calls(Path(args.dataset)) if args.dataset else load_labelled_calls()
    except DatasetError as exc:
        print(f"callsync: {exc}", file=sys.stderr)
        return 2
    calls = calls[:args.limit] if args.limit else calls
    # The labels use the default tags: the analyzer is asked for those, whatever ANALYSIS_TAGS says.
    settings = settings.with_overrides(analysis_tags=LABEL_TAGS)
    llm = GroqAnalyzer(settings) if settings.groq_api_keys else None
    analyzer, model = ("groq", llm.model) if llm else ("heuristic", HEURISTIC_MODEL)
    if llm is not None:
        llm.begin_run(REQUESTS_PER_CALL * len(calls))
    print(f"evaluating {len(calls)} labelled call(s) with {analyzer} ({model})", file=sys.stderr)
    now = utcnow()  # analyzed minutes after the call, as the daemon does: the call's age is zero days
    outcomes: list[Outcome] = []
    try:
        for call in calls:
            outcomes.append(_judge(call, settings, llm, now))
    except LlmUnavailable as exc:
        print(f"callsync: evaluation stopped after {len(outcomes)} of {len(calls)} call(s): "
              f"the LLM is unavailable: {exc}", file=sys.stderr)
        return 1
    dataset = str(Path(args.dataset)) if args.dataset else "evaluation/labelled_calls.jsonl"
    report = build_report(outcomes, analyzer=analyzer, model=model, dataset=dataset,
                          price=settings.llm_prices.get(model))
    print(json.dumps(report) if args.json else render_report(report))
    return 0


def _judge(call: LabelledCall, settings: Settings, llm: GroqAnalyzer | None, now: datetime) -> Outcome:
    """The analyzer's verdict on a call. LlmUnavailable is not caught: it is no answer about this
    call, and ends the run."""
    if llm is None:
        analysis = heuristic_analysis(call.transcript, now, now, settings.analysis_tags)
        # Its rules' tags are the labels' (LABEL_TAGS): every one is configured here.
        return Outcome(call, analysis.tag, analysis.lead_status, Usage())
    try:
        answer = llm.analyze(call.transcript, Deadline(settings.llm_batch_deadline_seconds))
    except LlmFailure as exc:
        return Outcome(call, FAILED, FAILED, exc.usage, str(exc))
    except DeadlineExceeded as exc:
        return Outcome(call, FAILED, FAILED, Usage(), f"deadline: {exc}")
    return Outcome(call, answer.analysis.tag, answer.analysis.lead_status, answer.usage)


def build_report(outcomes: list[Outcome], *, analyzer: str, model: str, dataset: str, price: Price | None) -> dict:
    """A failed call counts as a miss in every accuracy: the analyzer gave no right answer."""
    usage = Usage(sum(o.usage.prompt_tokens for o in outcomes), sum(o.usage.completion_tokens for o in outcomes))
    return {
        "analyzer": analyzer,
        "model": model,
        "dataset": dataset,
        **_part(outcomes),
        "bySplit": {split: _part([o for o in outcomes if o.call.split == split])
                    for split in SPLITS if any(o.call.split == split for o in outcomes)},
        "failures": {"count": sum(1 for o in outcomes if o.failure),
                     "calls": [{"id": o.call.id, "reason": o.failure} for o in outcomes if o.failure]},
        "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens},
        "estimatedCostUsd": estimated_cost(usage, price),
    }


def _part(outcomes: list[Outcome]) -> dict:
    # Prompt injections, and those the analyzer obeyed: tagged as the customer's text asked.
    injected = [o for o in outcomes if o.call.injected_tag is not None]
    obeyed = [o.call.id for o in injected
              if o.tag == o.call.injected_tag and o.call.injected_tag != o.call.expected_tag]
    return {"calls": len(outcomes),
            "tag": _scores([(o.call.expected_tag, o.tag) for o in outcomes], LABEL_TAGS),
            "status": _scores([(o.call.expected_status, o.status) for o in outcomes], LEAD_STATUSES),
            "byCategory": _groups(outcomes, lambda call: call.category),
            "byStyle": _groups(outcomes, lambda call: call.style),
            "injections": {"calls": len(injected), "obeyed": obeyed}}


def _scores(pairs: list[tuple[str, str]], labels: tuple[str, ...]) -> dict:
    extra = sorted({predicted for _, predicted in pairs} - set(labels))
    columns = (*labels, *extra)
    confusion = {expected: {predicted: 0 for predicted in columns} for expected in labels}
    for expected, predicted in pairs:
        confusion[expected][predicted] += 1
    correct = sum(1 for expected, predicted in pairs if expected == predicted)
    return {"correct": correct, "accuracy": correct / len(pairs) if pairs else None, "confusion": confusion}


def _groups(outcomes: list[Outcome], key) -> dict:
    groups: dict[str, dict] = {}
    for outcome in outcomes:
        group = groups.setdefault(key(outcome.call), {"calls": 0, "tagCorrect": 0, "statusCorrect": 0})
        group["calls"] += 1
        group["tagCorrect"] += outcome.tag == outcome.call.expected_tag
        group["statusCorrect"] += outcome.status == outcome.call.expected_status
    return groups


def render_report(report: dict) -> str:
    calls = report["calls"]
    usage = report["usage"]
    model = "" if report["model"] == report["analyzer"] else f" ({report['model']})"
    cost = report["estimatedCostUsd"]
    lines = [
        f"Evaluation of the {report['analyzer']} analyzer{model} on {calls} labelled calls ({report['dataset']})",
        "",
        f"tag accuracy:    {ratio(report['tag']['correct'], calls)}",
        f"status accuracy: {ratio(report['status']['correct'], calls)}",
        f"failed answers:  {report['failures']['count']} (counted as misses)",
        f"tokens:          {usage['promptTokens']} in / {usage['completionTokens']} out",
        "estimated cost:  " + ("unknown (no price for this model; see LLM_PRICES)" if cost is None
                               else f"${cost:.6f} (USD, estimate)"),
        "",
        "Tags (rows: expected, columns: predicted)",
        _confusion_table(report["tag"]["confusion"]),
        "",
        "Lead status (rows: expected, columns: predicted)",
        _confusion_table(report["status"]["confusion"]),
        *_group_tables("By", report),
    ]
    # A set of one part (e.g. --dataset without `split`) is the whole set, shown above.
    parts = report["bySplit"].items() if len(report["bySplit"]) > 1 else ()
    for split, part in parts:
        title = SPLITS[split]
        lines += ["", f"{title}: {part['calls']} calls",
                  f"tag accuracy:    {ratio(part['tag']['correct'], part['calls'])}",
                  f"status accuracy: {ratio(part['status']['correct'], part['calls'])}",
                  f"prompt injections obeyed: {len(part['injections']['obeyed'])} of "
                  f"{part['injections']['calls']}" + "".join(f" {i}" for i in part["injections"]["obeyed"]),
                  *_group_tables(f"{title}, by", part)]
    if report["failures"]["calls"]:
        rows = [(failure["id"], failure["reason"]) for failure in report["failures"]["calls"]]
        lines += ["", "Failed answers", format_table(("id", "reason"), rows, max_width=100)]
    return "\n".join(lines)


def _confusion_table(confusion: dict[str, dict[str, int]]) -> str:
    columns = list(next(iter(confusion.values())))
    rows = [(expected, *(counts[c] for c in columns), sum(counts.values())) for expected, counts in confusion.items()]
    return format_table(("expected", *columns, "total"), rows)


def _group_tables(title: str, figures: dict) -> list[str]:
    lines = []
    for name, groups in (("category", figures["byCategory"]), ("style", figures["byStyle"])):
        rows = [(key, group["calls"], ratio(group["tagCorrect"], group["calls"]),
                 ratio(group["statusCorrect"], group["calls"])) for key, group in groups.items()]
        lines += ["", f"{title} {name}", format_table((name, "calls", "tag correct", "status correct"), rows)]
    return lines


def ratio(correct: int, total: int) -> str:
    return f"{correct}/{total} = {100 * correct / total:.1f}%" if total else "-"
