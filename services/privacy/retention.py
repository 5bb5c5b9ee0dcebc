"""Retention: calls older than `TRANSCRIPT_RETENTION_DAYS` lose their transcript, recording URL and
raw extracted data; calls older than `RECORD_RETENTION_DAYS` are deleted. A pass of the call
processor's job, after its analysis (see docs/privacy.md for why there), in small batches so that
a first pass over years of calls never holds the database or the job for long."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from models.call import TRANSCRIPT_FIELDS
from services.database import CALL_AGE_INDEX_KEYS, CALLS, TRANSCRIPT_AGE_INDEX_KEYS
from services.run_records import RunRecorder, describe_failure
from utils.clock import utcnow

BATCH_SIZE = 200
# Per pass: a backlog (the setting just turned on) drains over a few runs, each bounded.
MAX_BATCHES = 25
_OLDEST_FIRST = [("callAt", ASCENDING)]


@dataclass(frozen=True)
class RetentionPolicy:
    transcript_days: int | None = None
    record_days: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.transcript_days or self.record_days)

    def transcript_expired(self, call_at: datetime, now: datetime) -> bool:
        return self.transcript_days is not None and call_at < now - timedelta(days=self.transcript_days)

    def record_expired(self, call_at: datetime, now: datetime) -> bool:
        return self.record_days is not None and call_at < now - timedelta(days=self.record_days)


class RetentionPass:
    def __init__(self, db: Database, policy: RetentionPolicy, stop: threading.Event | None = None, *,
                 batch_size: int = BATCH_SIZE, max_batches: int = MAX_BATCHES):
        self.calls = db[CALLS]
        self.policy = policy
        self.stop = stop or threading.Event()
        self.batch_size = batch_size
        self.max_batches = max_batches

    def run(self, recorder: RunRecorder) -> None:
        """Counted on the run: `retentionPasses`, `callsRemoved`, `transcriptsRemoved`. A database
        error ends the pass as an error on the run; the next run goes on from where it stopped."""
        if not self.policy.enabled:
            return
        recorder.add("retentionPasses")
        now = utcnow()
        try:
            if self.policy.record_days:
                cutoff = now - timedelta(days=self.policy.record_days)
                recorder.add("callsRemoved", self._in_batches({"callAt": {"$lt": cutoff}}, CALL_AGE_INDEX_KEYS, self._delete))
            if self.policy.transcript_days:
                cutoff = now - timedelta(days=self.policy.transcript_days)
                recorder.add("transcriptsRemoved", self._in_batches(
                    {"transcriptRemovedAt": None, "callAt": {"$lt": cutoff}}, TRANSCRIPT_AGE_INDEX_KEYS,
                    lambda ids: self._strip(ids, now)))
        except PyMongoError as exc:
            recorder.error(f"retention pass stopped ({describe_failure(exc)}); the next run goes on",
                           code="retention_failed")

    def _in_batches(self, selector: dict, index: list, act: Callable[[list], int]) -> int:
        """Oldest first, by the index named (a pass must never scan the calls)."""
        done = 0
        for _ in range(self.max_batches):
            ids = [doc["_id"] for doc in self.calls.find(selector, {"_id": 1}, sort=_OLDEST_FIRST, limit=self.batch_size,
                                                           hint=index)]
            if ids:
                done += act(ids)
            if len(ids) < self.batch_size or self.stop.is_set():
                break
        return done

    def _delete(self, ids: list) -> int:
        return self.calls.delete_many({"_id": {"$in": ids}}).deleted_count

    def _strip(self, ids: list, now: datetime) -> int:
        # `updatedAt` too: a consumer following "what changed since T" learns its copy must go.
        return self.calls.update_many({"_id": {"$in": ids}}, {
            "$unset": {name: "" for name in TRANSCRIPT_FIELDS},
            "$set": {"transcriptRemovedAt": now, "updatedAt": now}}).modified_count
