"""How long Groq asks us to wait, from the headers of a 429 (or 5xx) answer."""
from __future__ import annotations

import re
from typing import Mapping

from utils.http import parse_retry_after

# Groq spells reset times as durations: "7.66s", "2m59.56s", "1h2m", "150ms".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
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


def _duration(value: str) -> float | None:
    value = value.strip()
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
