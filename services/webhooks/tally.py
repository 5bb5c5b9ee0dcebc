"""Webhook deliveries counted by outcome: in memory for /metrics as they happen, and added to
`webhook_deliveries` (one document per UTC hour) every few seconds, so `main.py status` shows the
figures of every replica, rejections included, from any machine."""
from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Callable

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from services.run_records import describe_failure
from utils.clock import utcnow

log = logging.getLogger(__name__)

# What became of a delivery: at the listener (the first seven; `throttled`: refused 429 as its
# account had WEBHOOK_MAX_WAITING deliveries waiting), then at the processor (the last two).
OUTCOMES = ("accepted", "duplicate", "rejected_token", "rejected_sender", "too_large", "malformed", "throttled",
            "processed", "failed")
FLUSH_EVERY = timedelta(seconds=5)

OutcomeListener = Callable[[str, int], None]
LagListener = Callable[[float], None]


class DeliveryTally:
    def __init__(self, counts: Collection):
        self.counts = counts
        self._pending: Counter = Counter()
        self._lock = threading.Lock()
        self._flushed_at = utcnow()
        self._outcome_listeners: list[OutcomeListener] = []
        self._lag_listeners: list[LagListener] = []

    def subscribe(self, on_outcome: OutcomeListener, on_lag: LagListener) -> None:
        self._outcome_listeners.append(on_outcome)
        self._lag_listeners.append(on_lag)

    def count(self, outcome: str, n: int = 1) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown delivery outcome {outcome!r}")
        if n <= 0:
            return
        with self._lock:
            self._pending[outcome] += n
        for listener in self._outcome_listeners:
            listener(outcome, n)

    def lag(self, seconds: float) -> None:
        """From Bolna's `updated_at` to the write of the call."""
        for listener in self._lag_listeners:
            listener(seconds)

    def flush(self, *, force: bool = False) -> None:
        """Add the counts since the last flush to this hour's document; at most every FLUSH_EVERY
        unless forced. Counts the database refused stay pending for the next flush."""
        now = utcnow()
        with self._lock:
            if not self._pending or (not force and now - self._flushed_at < FLUSH_EVERY):
                return
            pending, self._pending = self._pending, Counter()
            self._flushed_at = now
        hour = now.replace(minute=0, second=0, microsecond=0)
        try:
            self.counts.update_one({"_id": self.counts.local_id(hour.strftime("%Y-%m-%dT%H"))},
                                   {"$inc": {f"counts.{name}": n for name, n in pending.items()},
                                    "$setOnInsert": {"at": hour}}, upsert=True)
        except PyMongoError as exc:
            log.warning("webhook delivery counts not stored yet (%s)", describe_failure(exc),
                        extra={"event": "webhook_counts_deferred"})
            with self._lock:
                self._pending.update(pending)

    def totals(self, since: datetime) -> dict[str, int]:
        """Deliveries by outcome in the hours from `since` on (as stored: up to FLUSH_EVERY behind)."""
        totals = Counter()
        for doc in self.counts.find({"at": {"$gte": since.replace(minute=0, second=0, microsecond=0)}}):
            totals.update({name: n for name, n in (doc.get("counts") or {}).items() if name in OUTCOMES})
        return {name: totals.get(name, 0) for name in OUTCOMES}
