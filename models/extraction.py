"""A call's `extracted_data`, read in every shape Bolna sends it.

- Flat (the legacy extraction prompt): `{"name": "Ravi", "user_interested": true}`.
- Nested objects: `{"address": {"line1": "12 MG Road", "city": "Pune"}}`. The structure is kept,
  so each value keeps its path (`extracted.address.city`) and two keys of one name under
  different parents (`customer.name`, `agent.name`) never overwrite each other.
- Extractions/dispositions (from Sept 2026): `{Category: {Disposition: {subjective, objective,
  confidence, confidence_label, reasoning_*, validation}}}`. A disposition is one value: its
  `objective`, else its `subjective`; its confidence is kept beside, under the same path.

Stored keys are made safe for MongoDB (no dots, no leading `$`); a key that becomes equal to a
sibling's gets a numbered suffix instead of overwriting it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_DEPTH = 6
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")  # a regex: a loop per character would cost half the mapping time
_SURROGATES = re.compile("[\ud800-\udfff]")
_INT64 = range(-2**63, 2**63)  # BSON integers; a bigger JSON number is kept as its digits
_DISPOSITION_KEYS = ("objective", "subjective")

Path = tuple[str, ...]


def storable(text: str) -> str:
    """JSON's `\\ud800` escape decodes to a lone surrogate, which UTF-8 (and so BSON) cannot
    encode: one such character would fail the bulk write of its whole page."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


def clean_text(value: Any) -> str | None:
    """Text to store: storable, without the control characters (other than line breaks and tabs)
    that broken upstream encodings leave; None when nothing is left."""
    if value is None:
        return None
    text = storable(value if isinstance(value, str) else str(value))
    return _CONTROL.sub("", text) or None


@lru_cache(maxsize=4096)  # extraction keys repeat from call to call
def safe_key(key: Any) -> str:
    """A MongoDB-safe field name: no dots, no leading `$`."""
    # BSON field names end at a NUL byte, so no control characters either.
    text = (clean_text(key) or "").replace(".", "_").strip() or "_"
    return "_" + text[1:] if text.startswith("$") else text


def plain(value: Any, depth: int = 0) -> Any:
    """A value safe to store: scalars as they are, containers with safe keys, bounded depth."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return clean_text(value) if isinstance(value, str) else value
    if depth >= MAX_DEPTH:
        return json.dumps(value, default=str)[:1000]
    if isinstance(value, dict):
        return _with_unique_keys(((k, plain(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    return str(value)


def _with_unique_keys(items) -> dict:
    out: dict[str, Any] = {}
    for key, value in items:
        out[_unique(safe_key(key), out)] = value
    return out


def _unique(key: str, siblings: dict) -> str:
    if key not in siblings:
        return key
    number = 2
    while f"{key}_{number}" in siblings:
        number += 1
    return f"{key}_{number}"


def _is_disposition(value: Any) -> bool:
    return isinstance(value, dict) and any(key in value for key in _DISPOSITION_KEYS)


@dataclass
class Extraction:
    values: dict[str, Any] = field(default_factory=dict)      # nested; a disposition is its value
    confidence: dict[str, Any] = field(default_factory=dict)  # nested like `values`, dispositions only
    stored: dict[str, Any] = field(default_factory=dict)      # the data as received, made storable: `plain(data)`
    # Lookup names: a top-level key, or a nested path joined with "_" (`customer_name`).
    _by_name: dict[str, tuple[Path, Any]] = field(default_factory=dict, repr=False)
    # Dispositions by their own name, when no other disposition shares it.
    _dispositions: dict[str, list[tuple[Path, Any]]] = field(default_factory=dict, repr=False)

    def find(self, name: str) -> tuple[Path, Any] | None:
        """(path, value) of what the extraction calls `name`, or None."""
        found = self._by_name.get(name)
        if found is None and len(self._dispositions.get(name, ())) == 1:
            found = self._dispositions[name][0]
        return found

    def without(self, paths: set[Path]) -> dict[str, Any]:
        """The values less the given paths (and the objects those leave empty)."""
        return _prune(self.values, paths, ())


def _prune(values: dict, paths: set[Path], prefix: Path) -> dict:
    kept: dict[str, Any] = {}
    for key, value in values.items():
        path = prefix + (key,)
        if path in paths:
            continue
        if isinstance(value, dict) and any(p[:len(path)] == path for p in paths):
            value = _prune(value, paths, path)
            if not value:
                continue
        kept[key] = value
    return kept


def read_extraction(data: dict) -> Extraction:
    """One walk of the data builds the values, the confidences and the storable copy."""
    extraction = Extraction()
    _walk(data, (), extraction.values, extraction.confidence, extraction.stored, extraction, 0)
    return extraction


def _walk(data: dict, prefix: Path, values: dict, confidence: dict, stored: dict, extraction: Extraction,
          depth: int) -> None:
    """`stored` receives `plain(data, depth)`: each value's copy as `plain(value, depth + 1)`."""
    for raw_key, raw_value in data.items():
        key = _unique(safe_key(raw_key), values)
        path = prefix + (key,)
        if _is_disposition(raw_value):
            stored[key] = plain(raw_value, depth + 1)
            objective = raw_value.get("objective")
            value = plain(objective if objective not in (None, "") else raw_value.get("subjective"))
            score = raw_value.get("confidence")
            score = score if isinstance(score, (int, float)) and not isinstance(score, bool) else \
                clean_text(raw_value.get("confidence_label"))
            if score is not None:
                confidence[key] = score
            extraction._dispositions.setdefault(key, []).append((path, value))
        elif isinstance(raw_value, dict) and depth < MAX_DEPTH:
            value, nested_confidence, nested_stored = {}, {}, {}
            _walk(raw_value, path, value, nested_confidence, nested_stored, extraction, depth + 1)
            if nested_confidence:
                confidence[key] = nested_confidence
            stored[key] = nested_stored if depth + 1 < MAX_DEPTH else plain(raw_value, depth + 1)
        else:
            value = plain(raw_value, depth)
            # A scalar's copy does not depend on the depth; a container's may, at the limit.
            stored[key] = plain(raw_value, depth + 1) if isinstance(raw_value, (dict, list, tuple)) else value
        values[key] = value
        extraction._by_name.setdefault("_".join(path), (path, value))
