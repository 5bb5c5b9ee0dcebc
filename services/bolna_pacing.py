"""Client-side pacing of Bolna requests: each endpoint under its documented limit, less headroom.

Bolna allows 500 requests a minute on an agent's listing (`/v2/agent/{id}/executions`, also
`/v2/agent/{id}` and `/call`) and 1,000 a minute elsewhere (`GET /executions/{id}`, ...), per
organisation, and answers 429 beyond. A backfill fires faster than that; pacing here keeps it at
the limit instead of buying 429s and their waits. The windows are pyrate-limiter's sliding-window
logs; waiting is ours, on the stop Event, so a SIGTERM ends it at once.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
from dataclasses import dataclass

from pyrate_limiter import InMemoryBucket, Rate, RateItem

# Bolna's documented limits, per minute and per organisation (/work/shared/bolna-api.md).
LISTING_PER_MINUTE = 500
OTHER_PER_MINUTE = 1000
DEFAULT_HEADROOM = 0.1
# The agent-scoped endpoints under the lower limit; every other path is under the higher one.
_LISTING_PATHS = re.compile(r"^/v2/agent/(?!all$)[^/]+(/executions)?$|^/call$")
# A wait is re-checked at least this often: other threads take turns meanwhile.
_LONGEST_NAP = 1.0


class PacingStopped(Exception):
    """The stop Event was set while a request waited for its turn."""


def endpoint_class(path: str) -> str:
    """`listing` (500/min) or `other` (1,000/min)."""
    return "listing" if _LISTING_PATHS.match(path) else "other"


@dataclass(frozen=True)
class Limits:
    listing_per_minute: int = LISTING_PER_MINUTE
    other_per_minute: int = OTHER_PER_MINUTE
    headroom: float = DEFAULT_HEADROOM  # the share of each limit left unused
    minute_seconds: float = 60.0  # shortened only by benchmarks, to time-scale a backfill

    def allowed(self, per_minute: int) -> int:
        return max(1, int(per_minute * (1 - self.headroom)))


class Pacer:
    """One sliding window per endpoint class; `wait_turn` blocks until a request may go."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        # Buckets without a Limiter: a Limiter leaks its bucket from a thread of its own, and
        # this process may hold a pacer per key; we leak on our own turns instead.
        self._windows = {kind: _Window(InMemoryBucket(_rates(limits.allowed(per_minute), limits.minute_seconds)))
                         for kind, per_minute in (("listing", limits.listing_per_minute),
                                                  ("other", limits.other_per_minute))}
        self.waited_seconds = 0.0  # time requests spent waiting for a turn, for the benchmarks

    def wait_turn(self, path: str, stop: threading.Event) -> None:
        """Raises PacingStopped when `stop` is set before the turn comes."""
        kind = endpoint_class(path)
        window = self._windows[kind]
        while True:
            if stop.is_set():
                raise PacingStopped(f"stopped while waiting to request {kind}")
            wait_ms = window.take(kind)
            if wait_ms is None:
                return
            nap = min(_LONGEST_NAP, max(wait_ms, 1) / 1000)
            self.waited_seconds += nap
            stop.wait(nap)


def _rates(allowed: int, minute_seconds: float) -> list[Rate]:
    """The minute's allowance, spread over its sixtieths: a whole minute's worth sent in one
    burst would reach Bolna with the jitter of the network, and a request delayed less than
    one sent before it could make Bolna count one too many in its own window."""
    minute_ms = int(minute_seconds * 1000)
    per_tick = math.ceil(allowed / 60)
    if per_tick >= allowed or minute_ms < 60:
        return [Rate(allowed, minute_ms)]
    return [Rate(per_tick, minute_ms // 60), Rate(allowed, minute_ms)]


class _Window:
    def __init__(self, bucket: InMemoryBucket):
        self.bucket = bucket
        self.lock = threading.Lock()
        self.limit = max(rate.limit for rate in bucket.rates)

    def take(self, kind: str) -> int | None:
        """None when a turn was taken, else the milliseconds until the window has room."""
        with self.lock:
            now = self.bucket.now()
            decision = self.bucket.put_decision(RateItem(kind, now, 1))
            if decision.allowed:
                if self.bucket.count() > 2 * self.limit:
                    self.bucket.leak(now)  # the entries older than the window
                return None
            return decision.retry_after_ms if decision.retry_after_ms is not None else 10


_pacers: dict[tuple[str, str, Limits], Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(base_url: str, api_key: str, limits: Limits) -> Pacer:
    """The process's one pacer for a key: Bolna counts per organisation, so every client of one
    key (both jobs, a CLI command beside the daemon's jobs) shares one window."""
    key = (base_url.rstrip("/"), hashlib.sha256(api_key.encode()).hexdigest(), limits)
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None:
            pacer = _pacers[key] = Pacer(limits)
        return pacer
