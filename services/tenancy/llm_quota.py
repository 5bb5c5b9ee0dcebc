"""The ceiling on LLM analyses across every account and replica (LLM_GLOBAL_LIMIT per sync
interval), kept in MongoDB so replicas share it: before an account's run, its per-run cap is
taken from the interval's remaining allowance; what the run did not use is given back.

One counter document per interval window. A take is one atomic `$inc`; when it overshoots the
ceiling, the overshoot is returned at once, so the sum granted never passes the ceiling even when
replicas take at the same instant (each sees its own increment's total and returns only what it
took beyond the ceiling).

The `$inc` never upserts: the total it returns is what the take is decided on, and of two upserts
racing to create a document, one may be answered with no document at all (the test run's wire
server) or a duplicate-key error, after its increment was or was not applied. The window's
document is created on its own first, where a race is harmless.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from utils.clock import unix_seconds


class LlmQuota:
    def __init__(self, counters: Collection, ceiling: int, interval: timedelta, clock: Callable[[], datetime]):
        """`clock`: the database server's (services/server_clock.py), so replicas agree on the window."""
        self._counters = counters
        self._ceiling = ceiling
        self._interval = interval
        self._clock = clock

    def take(self, wanted: int) -> "Grant":
        if wanted <= 0:
            return Grant(self, None, 0)
        now = self._clock()
        window = int(unix_seconds(now) // self._interval.total_seconds())
        counter = self._increment(window, wanted)
        if counter is None:  # the window's first take: create its counter, then take
            try:
                self._counters.update_one({"_id": window}, {"$setOnInsert": {"taken": 0, "at": now}}, upsert=True)
            except DuplicateKeyError:
                pass  # another replica created it at the same instant
            counter = self._increment(window, wanted)
        overshoot = min(wanted, max(0, counter["taken"] - self._ceiling))
        if overshoot:
            self._counters.update_one({"_id": window}, {"$inc": {"taken": -overshoot}})
        return Grant(self, window, wanted - overshoot)

    def _increment(self, window: int, count: int) -> dict | None:
        return self._counters.find_one_and_update({"_id": window}, {"$inc": {"taken": count}},
                                                  return_document=ReturnDocument.AFTER)

    def _give_back(self, window: int, count: int) -> None:
        self._counters.update_one({"_id": window}, {"$inc": {"taken": -count}})


class Grant:
    """Analyses an account may make in this run; `settle(used)` returns the rest to its window."""

    def __init__(self, quota: LlmQuota, window: int | None, count: int):
        self._quota = quota
        self._window = window
        self.count = count

    def settle(self, used: int) -> None:
        unused = self.count - min(used, self.count)
        if unused and self._window is not None:
            self._quota._give_back(self._window, unused)
        self.count = min(used, self.count)
