"""Composition root: builds every part from settings, so tests and tools can hand in their own
MongoDB client (pymongo or mongomock) and point the HTTP clients at local servers."""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

from pymongo import MongoClient
from pymongo.database import Database

from services.analyzer import build_batch
from services.bolna_client import BolnaClient
from services.call_store import CallStore
from services.crm_sync import CrmSync
from services.execution_feed import ExecutionFeed
from services.run_record import RunRecorder
from services.storage import ensure_indexes
from services.sync_runs import RunRecords
from utils.config import Settings

log = logging.getLogger(__name__)

JOB_NAMES = ("crm_sync", "call_processor")


class App:
    def __init__(self, settings: Settings, db: Database, bolna: BolnaClient, mongo_client=None):
        self.settings = settings
        self.db = db
        self.bolna = bolna
        self.mongo_client = mongo_client
        # Unique per process: names this daemon's analysis claims and run records.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()  # set on SIGTERM: jobs end after their current write
        self._active_jobs = 0
        self._idle = threading.Condition()
        self.feed = ExecutionFeed(db, bolna, stop=self.stop, agent_ids=settings.bolna_agent_ids,
                                  backfill=timedelta(days=settings.backfill_days),
                                  overlap=timedelta(minutes=settings.sync_overlap_minutes))
        self.crm_sync = CrmSync(db, settings.default_phone_region)
        self.call_store = CallStore(db, settings.default_phone_region)
        self.analysis = build_batch(db, settings, self.owner, self.stop)
        self.runs = RunRecords(db)

    @classmethod
    def build(cls, settings: Settings, mongo_client=None) -> "App":
        """`mongo_client`: any pymongo-compatible client; default: a MongoClient on MONGODB_URI."""
        if mongo_client is None:
            # Timeouts and the like come from the URI's options (e.g. serverSelectionTimeoutMS).
            mongo_client = MongoClient(settings.mongodb_uri, tz_aware=False, appname="callsync")
        db = mongo_client[settings.mongodb_db]
        return cls(settings, db, BolnaClient.from_settings(settings), mongo_client)

    def prepare(self) -> None:
        """Start-up work that touches the database: indexes, and runs a dead process left open."""
        ensure_indexes(self.db, self.settings.run_retention_days)
        stale = max(timedelta(hours=1), 3 * timedelta(minutes=self.settings.sync_interval_minutes))
        abandoned = self.runs.mark_abandoned(stale)
        if abandoned:
            log.warning("marked %d run(s) left running by a stopped process as abandoned", abandoned)

    def run_job(self, name: str, *, full: bool = False) -> dict:
        """Run one job now and return its run record (also stored in `sync_runs`)."""
        steps = {"crm_sync": self._crm_sync, "call_processor": self._call_processor}
        if name not in steps:
            raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOB_NAMES)}")
        with self._idle:
            self._active_jobs += 1
        try:
            return self.runs.record(name, lambda recorder: steps[name](recorder, full))
        finally:
            with self._idle:
                self._active_jobs -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs; False if one still does after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active_jobs == 0, timeout)

    def _crm_sync(self, recorder: RunRecorder, full: bool) -> None:
        self.feed.run(self.crm_sync, recorder, full=full)

    def _call_processor(self, recorder: RunRecorder, full: bool) -> None:
        try:
            self.feed.run(self.call_store, recorder, full=full)
        finally:
            # Calls stored by earlier runs are still worth analyzing when Bolna is down.
            self.analysis.run(recorder)

    def close(self) -> None:
        self.bolna.close()
        if self.mongo_client is not None:
            self.mongo_client.close()
