"""Full records shared by the two jobs: a call's `GET /executions/{id}` is made once, whichever
job needs it first, and handed to the other.

Both jobs read the same trimmed listings, and each needs the full record of every new terminal
call: fetched by each, that is twice the Bolna quota one read needs. A record is kept (a
cachetools TTL cache, bounded in entries and age) under its id and the status the listing
showed, since a terminal call's record is final; the other job takes it out when it reads it.
When both want one at the same moment (the daemon runs the jobs side by side), the second waits
for the first's request instead of making its own.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable

from cachetools import TTLCache

Key = tuple[str, str]  # (call id, status as listed)


class SharedRecords:
    def __init__(self, fetch: Callable[[str], dict], *, size: int, seconds: float):
        """`fetch(call_id)`: the request itself; `size` 0 keeps nothing (in-flight requests
        are still shared)."""
        self._fetch = fetch
        self._kept: TTLCache | None = TTLCache(maxsize=size, ttl=seconds) if size and seconds else None
        self._in_flight: dict[Key, _Flight] = {}
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, call_id: str, status: str) -> dict:
        """The call's full record. Raises what the request raised (to every job waiting on it)."""
        key = (call_id, status)
        with self._lock:
            if self._kept is not None and key in self._kept:
                self.hits += 1
                return self._kept.pop(key)  # each job reads a call once: the other one is done
            flight = self._in_flight.get(key)
            if flight is None:
                flight = self._in_flight[key] = _Flight()
                owner = True
            else:
                flight.waiters += 1
                owner = False
        if not owner:
            record = flight.result.result()
            with self._lock:
                self.hits += 1
            return record
        try:
            record = self._fetch(call_id)
        except BaseException as exc:
            with self._lock:
                del self._in_flight[key]
            flight.result.set_exception(exc)
            raise
        with self._lock:
            del self._in_flight[key]
            if not flight.waiters and self._kept is not None:
                self._kept[key] = record  # for the other job; a waiter has it already
        flight.result.set_result(record)
        return record

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept) if self._kept is not None else 0


class _Flight:
    def __init__(self):
        self.result: Future = Future()
        self.waiters = 0
