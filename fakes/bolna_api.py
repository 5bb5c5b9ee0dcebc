"""The Bolna API's rules as the fake enforces them: query parameters, errors, the trimmed list
projection, the rate limits (see /work/shared/bolna-api.md)."""
from __future__ import annotations

import re
import threading
import time
from collections import deque
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


# Bolna's documented limits per organisation (requests per minute), by endpoint.
LISTING_PER_MINUTE = 500   # /v2/agent/{id}/executions, /v2/agent/{id}, /call
OTHER_PER_MINUTE = 1000    # everything else, e.g. GET /executions/{id}
_LISTING_PATHS = re.compile(r"^/v2/agent/(?!all$)[^/]+(/executions)?$|^/call$")


class RateLimits:
    """A sliding minute per key and endpoint class, as strict as Bolna's documented limits read:
    no more than the limit in any window; beyond it a 429 and the seconds until room (a refused
    request does not count). `minute_seconds` shortens the minute for time-scaled benchmarks.
    Written independently of the client's pacer (pyrate-limiter), so each checks the other."""

    def __init__(self, minute_seconds: float = 60.0, listing: int = LISTING_PER_MINUTE,
                 other: int = OTHER_PER_MINUTE):
        self.minute_seconds = minute_seconds
        self.limits = {"listing": listing, "other": other}
        self._seen: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()

    def admit(self, api_key: str, path: str) -> float | None:
        """None when the request may be served, else the seconds to wait."""
        kind = "listing" if _LISTING_PATHS.match(path) else "other"
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault((api_key, kind), deque())
            while seen and seen[0] <= now - self.minute_seconds:
                seen.popleft()
            if len(seen) >= self.limits[kind]:
                return max(0.001, seen[0] + self.minute_seconds - now)
            seen.append(now)
            return None
