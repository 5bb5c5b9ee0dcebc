"""The Bolna API's rules as the fake enforces them: query parameters, errors, the trimmed list
projection (see /work/shared/bolna-api.md)."""
from __future__ import annotations

from datetime import datetime

# As Bolna documents the list projection: no agent_id, no updated_at.
TRIMMED_FIELDS = ("id", "status", "conversation_duration", "created_at")
TRIMMED_TELEPHONY_FIELDS = ("call_type", "duration")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_time(name: str, value: str | None) -> datetime:
    if not value:
        raise ApiError(400, f"'{name}' is required (UTC ISO 8601, e.g. 2026-06-07T00:00:00.000Z)")
    # An unescaped '+' in a query string decodes as a space ("...+00:00" -> "... 00:00").
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        raise ApiError(400, f"'{name}' is not an ISO 8601 datetime: {value!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, f"'{name}' must carry a UTC offset ('Z' or '+00:00'): {value!r}")
    return parsed


def parse_int(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer: {value!r}") from None


def created_key(execution: dict, key: str) -> tuple[datetime, str]:
    return datetime.fromisoformat(execution["created_at"]), key


def trim(execution: dict) -> dict:
    trimmed = {k: execution[k] for k in TRIMMED_FIELDS if k in execution}
    telephony = execution.get("telephony_data")
    if isinstance(telephony, dict):
        trimmed["telephony_data"] = {k: telephony[k] for k in TRIMMED_TELEPHONY_FIELDS if k in telephony}
    return trimmed
