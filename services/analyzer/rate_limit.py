"""What Groq's rate-limit headers say: how long a 429 (or 5xx) asks us to wait, and what is left
of each limit after any answer."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from utils.http import parse_retry_after

# Groq spells reset times as durations: "7.66s", "2m59.56s", "1h2m", "150ms".
# A part starts only where a number starts: tried from every digit of a long run of digits, it
# would rescan the rest of the run each time (quadratic; a header is outside text).
_DURATION_PART = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` (seconds or an HTTP date) when present; otherwise the latest reset among
    the rate limits that are used up (`x-ratelimit-remaining-*` of 0). None when no hint."""
    seconds = parse_retry_after(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    resets = [_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
              for kind in ("requests", "tokens")
              if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"]
    resets = [seconds for seconds in resets if seconds is not None]
    return max(resets) if resets else None


LIMIT_KINDS = ("requests", "tokens")


@dataclass(frozen=True)
class LimitReading:
    """One limit as an answer reported it. Groq documents `reset` as the time until the limit is
    back to its initial state; `limit` is per minute for tokens and per day for requests."""
    limit: int | None
    remaining: int
    reset_seconds: float


def limit_readings(headers: Mapping[str, str]) -> dict[str, LimitReading]:
    """The readings of `x-ratelimit-*`, by kind ("requests", "tokens"); a kind whose headers are
    missing or garbled is left out rather than guessed."""
    readings = {}
    for kind in LIMIT_KINDS:
        remaining = _count(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = _duration(headers.get(f"x-ratelimit-reset-{kind}") or "")
        if remaining is not None and reset is not None:
            readings[kind] = LimitReading(_count(headers.get(f"x-ratelimit-limit-{kind}")), remaining, reset)
    return readings


def _count(value: str | None) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _duration(value: str) -> float | None:
    value = value.strip()
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
