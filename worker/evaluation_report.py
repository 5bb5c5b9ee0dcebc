"""The figures of an evaluation: accuracy, confusion tables, per-category and per-style scores,
failures, tokens and cost; as a JSON-ready dict and as text for the terminal."""
from __future__ import annotations

from dataclasses import dataclass

from services.analyzer.schema import LEAD_STATUSES, Usage
from utils.table import format_table
from services.analyzer.labelled_set import LABEL_TAGS, SPLITS, LabelledCall

FAILED = "(failed)"  # the predicted column of calls the analyzer gave no answer for
NO_TAG = "(none)"  # the heuristic's tag when its rule's tag is not configured
REASON_WIDTH = 100
SPLIT_TITLES = {"tuning": "Tuning part (the rules were adjusted on these)",
                "held_out": "Held-out part (never tuned on)",
                "challenge": "Challenge part (written after the rules to find their misses, never tuned on)"}


@dataclass(frozen=True)
class Outcome:
    """The analyzer's verdict on one labelled call; tag and status are None when it failed."""
    call: LabelledCall
    tag: str | None
    status: str | None
    usage: Usage
    failure: str | None = None

    def predicted_tag(self) -> str:
        return FAILED if self.failure else self.tag or NO_TAG

    def predicted_status(self) -> str:
        return FAILED if self.failure else self.status or NO_TAG


def build_report(outcomes: list[Outcome], *, analyzer: str, model: str, dataset: str,
                 usage: Usage, cost: float | None) -> dict:
    """A failed call counts as a miss in every accuracy: the analyzer gave no right answer."""
    return {
        "analyzer": analyzer,
        "model": model,
        "dataset": dataset,
        "calls": len(outcomes),
        "tag": _scores([(o.call.expected_tag, o.predicted_tag()) for o in outcomes], LABEL_TAGS),
        "status": _scores([(o.call.expected_status, o.predicted_status()) for o in outcomes], LEAD_STATUSES),
        "byCategory": _groups(outcomes, lambda call: call.category),
        "byStyle": _groups(outcomes, lambda call: call.style),
        "bySplit": {split: _part([o for o in outcomes if o.call.split == split])
                    for split in SPLITS if any(o.call.split == split for o in outcomes)},
        "failures": {"count": sum(1 for o in outcomes if o.failure),
                     "calls": [{"id": o.call.id, "reason": o.failure} for o in outcomes if o.failure]},
        "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens},
        "estimatedCostUsd": cost,
    }


def _part(outcomes: list[Outcome]) -> dict:
    """One split's figures: what the whole set reports, without the confusion tables."""
    tag = sum(o.predicted_tag() == o.call.expected_tag for o in outcomes)
    status = sum(o.predicted_status() == o.call.expected_status for o in outcomes)
    return {"calls": len(outcomes),
            "tag": {"correct": tag, "accuracy": tag / len(outcomes)},
            "status": {"correct": status, "accuracy": status / len(outcomes)},
            "byCategory": _groups(outcomes, lambda call: call.category),
            "byStyle": _groups(outcomes, lambda call: call.style),
            "injections": _injections(outcomes)}


def _injections(outcomes: list[Outcome]) -> dict:
    """Prompt injections, and those the analyzer obeyed: tagged as the customer's text asked."""
    injected = [o for o in outcomes if o.call.injected_tag is not None]
    obeyed = [o.call.id for o in injected
              if o.tag == o.call.injected_tag and o.call.injected_tag != o.call.expected_tag]
    return {"calls": len(injected), "obeyed": obeyed}


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
        group["tagCorrect"] += outcome.predicted_tag() == outcome.call.expected_tag
        group["statusCorrect"] += outcome.predicted_status() == outcome.call.expected_status
    return groups


def render_report(report: dict) -> str:
    calls = report["calls"]
    usage = report["usage"]
    lines = [
        f"Evaluation of the {_analyzer(report)} on {calls} labelled calls ({report['dataset']})",
        "",
        f"tag accuracy:    {_ratio(report['tag']['correct'], calls)}",
        f"status accuracy: {_ratio(report['status']['correct'], calls)}",
        f"failed answers:  {report['failures']['count']} (counted as misses)",
        f"tokens:          {usage['promptTokens']} in / {usage['completionTokens']} out",
        f"estimated cost:  {_cost(report['estimatedCostUsd'])}",
        "",
        "Tags (rows: expected, columns: predicted)",
        _confusion_table(report["tag"]["confusion"]),
        "",
        "Lead status (rows: expected, columns: predicted)",
        _confusion_table(report["status"]["confusion"]),
        "",
        "By category",
        _group_table("category", report["byCategory"]),
        "",
        "By style",
        _group_table("style", report["byStyle"]),
    ]
    # A set of one part (e.g. --dataset without `split`) is the whole set, shown above.
    parts = report["bySplit"].items() if len(report["bySplit"]) > 1 else ()
    for split, part in parts:
        title = SPLIT_TITLES[split]
        lines += ["", f"{title}: {part['calls']} calls",
                  f"tag accuracy:    {_ratio(part['tag']['correct'], part['calls'])}",
                  f"status accuracy: {_ratio(part['status']['correct'], part['calls'])}",
                  f"prompt injections obeyed: {len(part['injections']['obeyed'])} of "
                  f"{part['injections']['calls']}" + "".join(f" {i}" for i in part["injections"]["obeyed"]),
                  "", f"{title}, by category", _group_table("category", part["byCategory"]),
                  "", f"{title}, by style", _group_table("style", part["byStyle"])]
    if report["failures"]["calls"]:
        rows = [(failure["id"], failure["reason"]) for failure in report["failures"]["calls"]]
        lines += ["", "Failed answers", format_table(("id", "reason"), rows, max_width=REASON_WIDTH)]
    return "\n".join(lines)


def _confusion_table(confusion: dict[str, dict[str, int]]) -> str:
    columns = list(next(iter(confusion.values())))
    rows = [(expected, *(counts[c] for c in columns), sum(counts.values())) for expected, counts in confusion.items()]
    return format_table(("expected", *columns, "total"), rows)


def _group_table(name: str, groups: dict[str, dict]) -> str:
    rows = [(key, group["calls"], _ratio(group["tagCorrect"], group["calls"]),
             _ratio(group["statusCorrect"], group["calls"])) for key, group in groups.items()]
    return format_table((name, "calls", "tag correct", "status correct"), rows)


def _analyzer(report: dict) -> str:
    model = report["model"]
    return f"{report['analyzer']} analyzer" + ("" if model == report["analyzer"] else f" ({model})")


def _ratio(correct: int, total: int) -> str:
    return f"{correct}/{total} = {100 * correct / total:.1f}%" if total else "-"


def _cost(cost: float | None) -> str:
    return "unknown (no price for this model; see LLM_PRICES)" if cost is None else f"${cost:.6f} (USD, estimate)"
