"""A Bolna execution (one call), read defensively from the API's JSON.

The API's shapes drift (list projection vs full record, `conversation_time` vs
`conversation_duration`, flat vs nested `extracted_data`), so every field is read with a
fallback and only a missing id or timestamp makes a record unusable. How `extracted_data` is read
in each shape Bolna sends, and its keys made safe: docs/collections.md, "Extracted data".
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from utils.clock import naive_utc, to_millis, utcnow
from utils.phone import DEFAULT_REGION, Phone, missing_number_reason, normalize_phone

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
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[_unique(safe_key(key), out)] = plain(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    return str(value)


def _unique(key: str, siblings: dict) -> str:
    if key not in siblings:
        return key
    number = 2
    while f"{key}_{number}" in siblings:
        number += 1
    return f"{key}_{number}"


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
        if isinstance(raw_value, dict) and any(name in raw_value for name in _DISPOSITION_KEYS):
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


TERMINAL_STATUSES = frozenset({
    "completed", "balance-low", "busy", "no-answer", "canceled", "cancelled", "failed",
    "stopped", "error",
})


class MalformedExecution(ValueError):
    def __init__(self, message: str, call_id: str | None = None, code: str = "malformed_execution"):
        super().__init__(message)
        self.call_id = call_id
        self.code = code


@dataclass
class Execution:
    id: str
    agent_id: str | None
    status: str
    created_at: datetime
    updated_at: datetime | None = None
    batch_id: str | None = None
    duration: float | None = None
    cost_cents: float | None = None
    transcript: str | None = None
    summary: str | None = None
    extracted_raw: Any = None          # as received, for the record
    extraction: Extraction | None = None  # None when absent or unreadable
    extracted_error: str | None = None
    direction: str | None = None       # inbound | outbound
    from_number: str | None = None
    to_number: str | None = None
    recording_url: str | None = None
    hangup_reason: str | None = None
    hangup_by: str | None = None
    answered_by_voice_mail: bool | None = None
    # Both numbers, normalized once when the execution is read.
    from_phone: Phone | None = None
    to_phone: Phone | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def extracted(self) -> dict[str, Any] | None:
        return self.extraction.values if self.extraction is not None else None

    @property
    def customer_number(self) -> str | None:
        """The other party: the number called on outbound calls, the caller on inbound ones. Never
        the agent's own line, even when the customer's number is missing."""
        return self.from_number if self.direction == "inbound" else self.to_number

    @property
    def customer_phone(self) -> Phone | None:
        return self.from_phone if self.direction == "inbound" else self.to_phone

    @property
    def customer_phone_missing(self) -> str | None:
        """Why there is no customer number: `missing` or `withheld`; None when there is one."""
        return missing_number_reason(self.customer_number) if self.customer_phone is None else None

    @property
    def voicemail(self) -> bool:
        """A machine took the call: Bolna's voicemail detection, or a hang-up reason saying so."""
        reason = (self.hangup_reason or "").lower()
        return self.status == "completed" and bool(
            self.answered_by_voice_mail or "voicemail" in reason or "machine" in reason)

    @property
    def connected(self) -> bool:
        """`completed` does not mean anyone spoke (Bolna docs): check duration and voicemail too."""
        return self.status == "completed" and (self.duration or 0) > 0 and not self.voicemail


# How far ahead of this server's clock a time Bolna sends may be: clocks drift by seconds; a call
# dated days ahead is a wrong record, and its `updated_at` would outrank every real update.
FUTURE_TOLERANCE = timedelta(days=1)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 as Bolna writes it (`2026-06-07T10:00:00.123Z`, sometimes without zone) -> naive UTC
    (utils/clock.py); None when there is none, or it is not a time, or it cannot be represented."""
    try:
        return _read_time(value)
    except MalformedExecution:
        return None


def _read_time(value: Any, latest: datetime | None = None, name: str = "time", call_id: str | None = None
               ) -> datetime | None:
    """`parse_time`, but a time that cannot be represented in UTC ("0001-01-01T00:00:00+01:00"),
    or lies after `latest`, makes the execution `call_id` unusable: MalformedExecution saying why."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    try:
        # MongoDB stores milliseconds; truncating here keeps re-syncs byte-identical.
        moment = to_millis(naive_utc(moment))
    except OverflowError:
        raise MalformedExecution(f"execution {name} {value.strip()[:40]!r} is outside the years 1-9999 in UTC",
                                 call_id, code="unusable_time") from None
    if latest is not None and moment > latest:
        raise MalformedExecution(f"execution {name} {value.strip()[:40]!r} is more than "
                                 f"{FUTURE_TOLERANCE.total_seconds() / 3600:g} hours ahead of this server's clock",
                                 call_id, code="unusable_time")
    return moment


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # an integer past a float: JSON allows it
        return None
    return number if number == number and abs(number) != float("inf") else None


def _read_extracted(raw: Any) -> tuple[Extraction | None, str | None]:
    """(extraction, error). Bolna sends an object, a JSON string of one, null, or nothing."""
    if raw is None or raw == "":
        return None, None
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return None, "extracted_data is a string that is not valid JSON"
    if not isinstance(value, dict):
        return None, f"extracted_data is a {type(value).__name__}, not an object"
    return read_extraction(value), None


def execution_id(payload: dict) -> str | None:
    """The call id as the jobs store it (an opaque string), or None when there is none."""
    raw_id = payload.get("id") or payload.get("execution_id")
    if raw_id is None or isinstance(raw_id, (dict, list, bool)) or not str(raw_id).strip():
        return None
    return str(raw_id).strip()[:200]


def linked_call_id(link: dict) -> str:
    """A `customer_calls` link's call: its `_id` is the call id made unique across accounts
    (services/accounts), and links written before accounts existed carry no `callId` (their `_id`
    is the call id)."""
    return link.get("callId", link["_id"])


def parse_execution(payload: Any, region: str = DEFAULT_REGION, now: datetime | None = None) -> Execution:
    """Read one execution; raises MalformedExecution when it cannot be identified or dated, or
    when a time it carries cannot be used (see `_read_time`). `region`: where numbers written
    without a country code are from; `now`: this server's time (naive UTC), by default the clock's."""
    if not isinstance(payload, dict):
        raise MalformedExecution(f"execution is a {type(payload).__name__}, not an object",
                                 code="not_an_object")
    call_id = execution_id(payload)
    if call_id is None:
        raise MalformedExecution("execution has no id", code="missing_id")
    if storable(call_id) != call_id:
        # Changing it would store the call under an id Bolna does not know.
        raise MalformedExecution("execution id is not valid text", code="bad_id")
    latest = (now or utcnow()) + FUTURE_TOLERANCE
    created_at = _read_time(payload.get("created_at"), latest, "created_at", call_id)
    if created_at is None:
        raise MalformedExecution("execution has no valid created_at", call_id, code="missing_created_at")
    updated_at = _read_time(payload.get("updated_at"), latest, "updated_at", call_id)
    telephony = payload.get("telephony_data")
    telephony = telephony if isinstance(telephony, dict) else {}
    extraction, extracted_error = _read_extracted(payload.get("extracted_data"))
    duration = _number(payload.get("conversation_duration"))
    if duration is None:
        duration = _number(payload.get("conversation_time"))
    if duration is None:
        duration = _number(telephony.get("duration"))
    direction = clean_text(telephony.get("call_type"))
    voicemail = payload.get("answered_by_voice_mail")
    # Numbers exactly as received (cleaning them would merge "98765\x0043210" into a valid
    # number); normalization is for matching only.
    from_number, to_number = _raw_number(telephony.get("from_number")), _raw_number(telephony.get("to_number"))
    return Execution(
        id=call_id,
        agent_id=clean_text(payload.get("agent_id")),
        status=(clean_text(payload.get("status")) or "unknown").lower(),
        created_at=created_at,
        updated_at=updated_at,
        batch_id=clean_text(payload.get("batch_id")),
        duration=duration,
        cost_cents=_number(payload.get("total_cost")),
        transcript=clean_text(payload.get("transcript")),
        summary=clean_text(payload.get("summary")),
        # Walked once: an object's storable copy comes with its reading.
        extracted_raw=extraction.stored if isinstance(payload.get("extracted_data"), dict) and extraction is not None
        else plain(payload.get("extracted_data")),
        extraction=extraction,
        extracted_error=extracted_error,
        direction=direction.lower() if direction else None,
        from_number=from_number,
        to_number=to_number,
        from_phone=normalize_phone(from_number, region),
        to_phone=normalize_phone(to_number, region),
        recording_url=clean_text(telephony.get("recording_url")),
        hangup_reason=clean_text(telephony.get("hangup_reason")),
        hangup_by=clean_text(telephony.get("hangup_by")),
        answered_by_voice_mail=voicemail if isinstance(voicemail, bool) else None,
    )


def _raw_number(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    return storable(value if isinstance(value, str) else str(value))


def needs_full_record(payload: dict) -> bool:
    """A list item in the trimmed projection lacks what the CRM needs; the full record is
    worth fetching only once the call is terminal (before that the fields are not final)."""
    status = str(payload.get("status") or "").lower()
    telephony = payload.get("telephony_data")
    has_numbers = isinstance(telephony, dict) and ("to_number" in telephony or "from_number" in telephony)
    return status in TERMINAL_STATUSES and not ("transcript" in payload and has_numbers)
