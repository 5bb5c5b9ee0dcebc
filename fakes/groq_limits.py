"""The fake Groq server's rate limits, kept as Groq documents them: per organisation, tokens per
minute and requests per day, reported on every answer in `x-ratelimit-*` headers, and a 429 with
`retry-after` and a body naming the limit when a request does not fit.

Tokens are counted when a request arrives (prompt and completion; the fake knows its answer
before it sends it) and flow back evenly over the window. `window_seconds` shrinks the minute so
a test sees a full limit cycle in seconds; the day shrinks by the same factor.
"""
from __future__ import annotations

import math
import threading
import time

DAY_PER_MINUTE = 24 * 60


class _Bucket:
    """`used` drains evenly to 0 over `window` seconds from full."""

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.rate = limit / window
        self.used = 0.0
        self.at = time.monotonic()

    def drain(self, now: float) -> None:
        self.used = max(0.0, self.used - (now - self.at) * self.rate)
        self.at = now

    def seconds_until_fits(self, amount: int) -> float:
        return max(0.0, (self.used + amount - self.limit) / self.rate)

    def headers(self, kind: str) -> dict[str, str]:
        return {f"x-ratelimit-limit-{kind}": str(self.limit),
                f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.limit - self.used))),
                f"x-ratelimit-reset-{kind}": _duration(self.used / self.rate)}


class RateLimits:
    def __init__(self, tokens_per_minute: int, requests_per_day: int, window_seconds: float = 60.0):
        self._lock = threading.Lock()
        self.tokens = _Bucket(tokens_per_minute, window_seconds)
        self.requests = _Bucket(requests_per_day, window_seconds * DAY_PER_MINUTE)

    def take(self, model: str, tokens: int) -> tuple[dict[str, str], dict | None]:
        """Count a request of `tokens`; returns the headers of its answer and, when it does not
        fit, the body of the 429 (nothing is counted then)."""
        with self._lock:
            now = time.monotonic()
            self.tokens.drain(now)
            self.requests.drain(now)
            error = None
            if self.requests.seconds_until_fits(1) > 0:
                wait, error = self.requests.seconds_until_fits(1), _refusal(
                    model, "requests per day (RPD)", self.requests, 1, "requests")
            elif self.tokens.seconds_until_fits(tokens) > 0:
                wait, error = self.tokens.seconds_until_fits(tokens), _refusal(
                    model, "tokens per minute (TPM)", self.tokens, tokens, "tokens")
            else:
                self.tokens.used += tokens
                self.requests.used += 1
            headers = {**self.requests.headers("requests"), **self.tokens.headers("tokens")}
            if error is not None:
                headers["retry-after"] = str(math.ceil(wait))
            return headers, error


def _refusal(model: str, limit_name: str, bucket: _Bucket, requested: int, kind: str) -> dict:
    wait = bucket.seconds_until_fits(requested)
    return {"error": {
        "message": (f"Rate limit reached for model `{model}` on {limit_name}: Limit {bucket.limit}, "
                    f"Used {math.ceil(bucket.used)}, Requested {requested}. Please try again in {_duration(wait)}."),
        "type": kind, "code": "rate_limit_exceeded"}}


def _duration(seconds: float) -> str:
    """Groq's spelling: "7.66s", "2m59.56s"."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}m{rest:.2f}s" if minutes else f"{rest:.2f}s"
