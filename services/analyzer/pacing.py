"""Pacing LLM requests by what Groq's answers say is left of the organisation's limits, so a run
stays under them instead of finding them by 429 (docs/analysis.md, "Pacing from the headers"),
and the deadline that ends a run by its time whatever the LLM does."""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from utils.http import parse_retry_after

# Groq spells reset times as durations: "7.66s", "2m59.56s", "1h2m", "150ms".
# A part starts only where a number starts: tried from every digit of a long run of digits, it
# would rescan the rest of the run each time (quadratic; a header is outside text).
_DURATION_PART = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class LimitReading:
    """One limit as an answer reported it. Groq documents `reset` as the time until the limit is
    back to its initial state; `limit` is per minute for tokens and per day for requests."""
    limit: int | None
    remaining: int
    reset_seconds: float

    def seconds_until(self, amount: float, elapsed: float) -> float:
        """How long until `amount` is left, `elapsed` seconds after the reading, refilling evenly
        towards `limit` until `reset` has passed; 0 when it is now."""
        whole_at = self.reset_seconds - elapsed
        if whole_at <= 0:
            return 0.0  # whole again
        if self.limit is None or self.limit <= self.remaining:
            # No refill rate to go by: what is left now, or all of it once whole.
            return 0.0 if self.remaining >= amount else whole_at
        rate = (self.limit - self.remaining) / self.reset_seconds
        return max(0.0, (min(amount, self.limit) - self.remaining) / rate - elapsed)


def limit_readings(headers: Mapping[str, str]) -> dict[str, LimitReading]:
    """The readings of `x-ratelimit-*`, by kind ("requests", "tokens"); a kind whose headers are
    missing or garbled is left out rather than guessed."""
    readings = {}
    for kind in ("requests", "tokens"):
        remaining = _count(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = _duration(headers.get(f"x-ratelimit-reset-{kind}") or "")
        if remaining is not None and reset is not None:
            readings[kind] = LimitReading(_count(headers.get(f"x-ratelimit-limit-{kind}")), remaining, reset)
    return readings


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` (seconds or an HTTP date) when present; otherwise the latest reset among
    the rate limits that are used up. None when no hint."""
    seconds = parse_retry_after(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    resets = [reading.reset_seconds for reading in limit_readings(headers).values() if reading.remaining == 0]
    return max(resets) if resets else None


def _count(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdecimal() else None


def _duration(value: str) -> float | None:
    value = value.strip()
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class DeadlineExceeded(Exception):
    """An attempt could not finish before the batch deadline; the call goes back to the queue."""


class Deadline:
    def __init__(self, seconds: float, stop: threading.Event | None = None):
        """`stop`: the daemon's shutdown signal, which ends the run like its deadline does."""
        self._ends_at = time.monotonic() + seconds
        self._given_up = threading.Event()
        self._stop = stop or threading.Event()

    @property
    def reached(self) -> bool:
        return self._given_up.is_set() or self._stop.is_set() or time.monotonic() >= self._ends_at

    def remaining(self) -> float:
        return max(0.0, self._ends_at - time.monotonic())

    def request_timeout(self, limit: float) -> float:
        """How long the next request may take; raises once the deadline is reached."""
        if self.reached:
            raise DeadlineExceeded("the batch deadline was reached before the request")
        return min(limit, self.remaining())

    def sleep(self, seconds: float) -> None:
        """Wait before a retry, unless the wait would outlast the deadline. Then the whole run
        gives up: the wait comes from the account's rate limit, which every other call shares."""
        if seconds >= self.remaining():
            self._given_up.set()
            raise DeadlineExceeded(f"waiting {seconds:.1f} s to retry would pass the batch deadline")
        if self._stop.wait(seconds):
            raise DeadlineExceeded("the daemon is stopping")


# How often a waiting request looks again: answers arriving meanwhile change what is left.
RECHECK_SECONDS = 0.05
# Expected completion tokens before any answer told us; the running mean replaces it.
INITIAL_COMPLETION_TOKENS = 400
_MEAN_WEIGHT = 0.2


class RatePacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: dict[str, tuple[LimitReading, float]] = {}  # with when read
        self._reserved_tokens = 0
        self._in_flight = 0
        self._paused_until = 0.0
        self._completion_tokens = float(INITIAL_COMPLETION_TOKENS)

    def acquire(self, prompt_tokens: int, deadline: Deadline) -> int:
        """Wait until a request of `prompt_tokens` fits, and count it in flight; returns the
        tokens reserved, for `settle`. A wait that would pass the deadline raises
        DeadlineExceeded at once (through `deadline.sleep`)."""
        while True:
            with self._lock:
                tokens = prompt_tokens + math.ceil(self._completion_tokens)
                wait = self._wait(tokens, self._clock())
                if wait <= 0:
                    self._in_flight += 1
                    self._reserved_tokens += tokens
                    return tokens
            if wait >= deadline.remaining():
                deadline.sleep(wait)
            deadline.sleep(min(wait, RECHECK_SECONDS))

    def settle(self, reserved: int, headers: Mapping[str, str] | None, completion_tokens: int | None) -> None:
        """A request ended: its reservation is replaced by what the answer (if any) reports."""
        with self._lock:
            self._in_flight -= 1
            self._reserved_tokens -= reserved
            now = self._clock()
            for kind, reading in limit_readings(headers or {}).items():
                self._readings[kind] = (reading, now)
            if completion_tokens is not None:
                self._completion_tokens += _MEAN_WEIGHT * (completion_tokens - self._completion_tokens)

    def pause(self, seconds: float) -> None:
        """A 429 told one request to wait: every request waits, or the others buy 429s too."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _wait(self, tokens: int, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if not self._readings:
            return RECHECK_SECONDS if self._in_flight else 0.0
        waits = [0.0]
        if "tokens" in self._readings:
            reading, at = self._readings["tokens"]
            needed = tokens + self._reserved_tokens
            waits.append(reading.seconds_until(needed, now - at))
            if reading.limit is not None and needed > reading.limit and self._in_flight:
                # It cannot fit beside the requests in flight, however long it waits; a request
                # larger than the whole limit goes alone, once the limit is whole.
                waits.append(RECHECK_SECONDS)
        if "requests" in self._readings:
            reading, at = self._readings["requests"]
            waits.append(reading.seconds_until(1 + self._in_flight, now - at))
        return max(waits)
