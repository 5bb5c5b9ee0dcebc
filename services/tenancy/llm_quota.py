"""The ceiling on LLM analyses across every account and replica (LLM_GLOBAL_LIMIT per sync
interval), kept in MongoDB so replicas share it: before an account's run, its per-run cap is
taken from the interval's remaining allowance; what the run did not use is given back.

One counter document per interval window. A take is one atomic `$inc`; when it overshoots the
ceiling, the overshoot is returned at once, so the sum granted never passes the ceiling even when
replicas take at the same instant (each sees its own increment's total and returns only what it
took beyond the ceiling).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from pymongo import ReturnDocument
from pymongo.collection import Collection

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
        counter = self._counters.find_one_and_update(
            {"_id": window}, {"$inc": {"taken": wanted}, "$setOnInsert": {"at": now}},
            upsert=True, return_document=ReturnDocument.AFTER)
        overshoot = min(wanted, max(0, counter["taken"] - self._ceiling))
        if overshoot:
            self._counters.update_one({"_id": window}, {"$inc": {"taken": -overshoot}})
        return Grant(self, window, wanted - overshoot)

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
