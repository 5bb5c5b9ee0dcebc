"""The labelled call set of the quality evaluation (`evaluation/labelled_calls.jsonl`), read and
checked: a broken line is one error naming it, never a silently wrong figure."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.analyzer.schema import LEAD_STATUSES
from utils.config import DEFAULT_TAGS

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "evaluation" / "labelled_calls.jsonl"
# The set is labelled with the default tags; evaluate asks the analyzer for these.
LABEL_TAGS = DEFAULT_TAGS
_FIELDS = ("id", "style", "category", "transcript", "expected_tag", "expected_status")
# The parts (`split`), with the title evaluate reports each under. The held-out figures say how
# the offline analyzer does on calls it has not seen; the challenge part aims at what it misses.
SPLITS = {"tuning": "Tuning part (the rules were adjusted on these)",
          "held_out": "Held-out part (never tuned on)",
          "challenge": "Challenge part (written after the rules to find their misses, never tuned on)"}
DEFAULT_SPLIT = "tuning"  # a set without the field (e.g. --dataset) is reported as one part


class DatasetError(ValueError):
    """The labelled set cannot be used; the message names the file and line, never a transcript."""


@dataclass(frozen=True)
class LabelledCall:
    id: str
    style: str
    category: str
    transcript: str
    expected_tag: str
    expected_status: str
    split: str = DEFAULT_SPLIT
    injected_tag: str | None = None  # a prompt injection's: the tag the customer's text asks for


def load_labelled_calls(path: Path = DEFAULT_PATH) -> list[LabelledCall]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the labelled set {path}: {exc}") from None
    calls: dict[str, LabelledCall] = {}  # by id
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        call = _parse(line, where)
        if call.id in calls:
            raise DatasetError(f"{where}: id {call.id!r} is used twice")
        calls[call.id] = call
    if not calls:
        raise DatasetError(f"the labelled set {path} holds no calls")
    return list(calls.values())


def _parse(line: str, where: str) -> LabelledCall:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: not a JSON object")
    missing = [name for name in _FIELDS if not isinstance(item.get(name), str) or not item[name].strip()]
    if missing:
        raise DatasetError(f"{where}: needs text in {', '.join(missing)}")
    split, injected = item.get("split", DEFAULT_SPLIT), item.get("injected_tag")
    for name, value, allowed in (("expected_tag", item["expected_tag"], LABEL_TAGS),
                                 ("expected_status", item["expected_status"], LEAD_STATUSES),
                                 ("split", split, SPLITS),
                                 ("injected_tag", LABEL_TAGS[0] if injected is None else injected, LABEL_TAGS)):
        if value not in allowed:
            raise DatasetError(f"{where}: {name} must be one of {', '.join(allowed)}")
    return LabelledCall(**{name: item[name] for name in _FIELDS}, split=split, injected_tag=injected)
