"""Pacing LLM requests by what Groq's answers say is left of the organisation's limits, so a batch
stays under them instead of finding them by 429.

Each answer carries, per limit, what remains and how long until the limit is whole again; between
answers the pacer assumes an even refill over that time. A request goes when the tokens it will
use (its prompt, estimated, plus the completion size seen so far) fit in what is left after the
requests in flight, so the number in flight adapts to the limit, up to the batch's workers.
Before the first answer of a process one request goes at a time: nothing is known yet.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Mapping

from services.analyzer.deadline import Deadline
from services.analyzer.rate_limit import LimitReading, limit_readings

# How often a waiting request looks again: answers arriving meanwhile change what is left.
RECHECK_SECONDS = 0.05
# Expected completion tokens before any answer told us; the running mean replaces it.
INITIAL_COMPLETION_TOKENS = 400
_MEAN_WEIGHT = 0.2


class _Window:
    """One limit from one reading, refilling evenly towards `limit` until `reset` has passed."""

    def __init__(self, reading: LimitReading, at: float):
        self.reading = reading
        self.at = at

    def seconds_until(self, amount: float, now: float) -> float:
        """How long until `amount` is left; 0 when it is now."""
        limit, remaining, reset = self.reading.limit, self.reading.remaining, self.reading.reset_seconds
        elapsed = now - self.at
        whole_at = reset - elapsed
        if whole_at <= 0:
            return 0.0  # whole again
        if limit is None or limit <= remaining:
            # No refill rate to go by: what is left now, or all of it once whole.
            return 0.0 if remaining >= amount else whole_at
        rate = (limit - remaining) / reset
        return max(0.0, (min(amount, limit) - remaining) / rate - elapsed)


class RatePacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
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
                self._windows[kind] = _Window(reading, now)
            if completion_tokens is not None:
                self._completion_tokens += _MEAN_WEIGHT * (completion_tokens - self._completion_tokens)

    def pause(self, seconds: float) -> None:
        """A 429 told one request to wait: every request waits, or the others buy 429s too."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _wait(self, tokens: int, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if not self._windows:
            return RECHECK_SECONDS if self._in_flight else 0.0
        waits = [0.0]
        if (window := self._windows.get("tokens")) is not None:
            needed = tokens + self._reserved_tokens
            waits.append(window.seconds_until(needed, now))
            if window.reading.limit is not None and needed > window.reading.limit and self._in_flight:
                # It cannot fit beside the requests in flight, however long it waits; a request
                # larger than the whole limit goes alone, once the limit is whole.
                waits.append(RECHECK_SECONDS)
        if (window := self._windows.get("requests")) is not None:
            waits.append(window.seconds_until(1 + self._in_flight, now))
        return max(waits)
