"""Composition root: builds every part from settings, so tests and tools can hand in their own
MongoDB client (pymongo or mongomock) and point the HTTP clients at local servers."""
from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from models.customer import StatusRanks
import groq

from services.analyzer.batch import AnalysisBatch, claim_lease_seconds
from services.analyzer.batch_api import BatchApiLane
from services.analyzer.claims import CallQueue
from services.analyzer.groq_analyzer import GroqAnalyzer
from services.bolna_client import BolnaClient
from services.call_writer import CallWriter
from services.customer_writer import CustomerWriter
from services.database import CALLS, LLM_BATCHES, WEBHOOK_DELIVERIES, WEBHOOK_INBOX, ensure_indexes, tenant_view
from services.execution_feed import ExecutionFeed
from services.page_reader import PageReader
from services.record_cache import SharedRecords
from services.privacy.erasure import Eraser
from services.privacy.guard import PrivacyGuard
from services.privacy.hashing import hasher_for
from services.privacy.retention import RetentionPass, RetentionPolicy
from services.privacy.suppressions import SuppressionList
from services.run_records import RunRecords, describe_failure, stale_after
from services.server_clock import ServerClock
from services.webhooks.inbox import Inbox
from services.webhooks.processor import LEASE_SECONDS, AccountWriters, InboxProcessor
from services.webhooks.routes import SingleRoute
from services.webhooks.tally import DeliveryTally
from utils.config import Settings
from utils.logging import log_context
from worker.jobs import JOB_NAMES, JOBS, ScheduledJob
from worker.metrics import RunMetrics, observe_webhooks
from worker.status import StatusReader

log = logging.getLogger(__name__)

DEFAULT_SERVER_SELECTION_MS = 5000
# Uploading a batch job's input file (up to 90 MB) takes longer than an analysis request.
BATCH_API_TIMEOUT_SECONDS = 300.0


def connect(settings: Settings) -> MongoClient:
    """A client of MONGODB_URI. Timeouts and the like come from the URI's options; without one, a
    server that cannot be reached is reported after a few seconds, not the driver's 30."""
    timeout = {} if "serverselectiontimeoutms" in settings.mongodb_uri.lower() else {
        "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_MS}
    return MongoClient(settings.mongodb_uri, tz_aware=False, appname="callsync", **timeout)


def build_analysis(db: Database, settings: Settings, owner: str,
                   stop: threading.Event | None = None) -> AnalysisBatch:
    """The call processor's second phase. `owner` (unique per process) marks this process's claims;
    `stop` ends a batch early. Without a Groq key every call gets the heuristic analysis."""
    queue = CallQueue(db[CALLS], owner, claim_lease_seconds(settings), clock=ServerClock(db).now)
    llm = GroqAnalyzer(settings) if settings.groq_api_keys else None
    return AnalysisBatch(db, queue, settings, llm, stop)


def build_batch_api(db: Database, settings: Settings, owner: str, analysis: AnalysisBatch) -> BatchApiLane | None:
    """The Groq Batch API lane for backlogs; None without a Groq key or with LLM_BATCH_MODE=off."""
    if not settings.groq_api_keys or settings.llm_batch_mode == "off":
        return None
    # The SDK's own retries (2): these few requests have no retry loop of ours around them.
    client = groq.Groq(api_key=settings.groq_api_keys[0], base_url=settings.groq_base_url,
                       timeout=BATCH_API_TIMEOUT_SECONDS)
    # The synchronous lane's queue and write-back (and so its pipeline catalog), not copies of them.
    return BatchApiLane(db[LLM_BATCHES], analysis.queue, analysis.outcomes, settings, client, owner,
                        clock=analysis.queue.clock)


def build_writers(db: Database, settings: Settings) -> AccountWriters:
    """One account's call and customer writers (`db`: its view), behind its suppression list:
    the poll's, and the webhook processor's for the account's deliveries."""
    guard = PrivacyGuard(SuppressionList(db, hasher_for(settings.privacy_hash_key)),
                         Eraser(db, settings.default_phone_region))
    return AccountWriters(CallWriter(db, guard, retention_policy(settings)),
                          CustomerWriter(db, StatusRanks(settings.status_precedence), guard),
                          settings.default_phone_region)


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(settings.transcript_retention_days, settings.record_retention_days)


class AccountApp:
    """One account's half of the daemon: its Bolna client, its view of the database, both jobs'
    parts. Single-account mode runs one (inside `App`); with many accounts (worker/fleet.py) a
    replica builds one for each account it has claimed."""

    def __init__(self, settings: Settings, db: Database, bolna: BolnaClient, tenant_id=None):
        """`tenant_id`: the account whose records this app reads and writes (`userId`); None, the
        single account of the environment."""
        self.settings = settings
        self.db = db = tenant_view(db, tenant_id)
        self.tenant_id = tenant_id
        self.bolna = bolna
        # Unique per process: names this daemon's analysis claims and run records.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop = bolna.stop  # set on SIGTERM: jobs end after their current write, waits end at once
        self._active_jobs = 0
        self._idle = threading.Condition()
        # One full-record read per call for both jobs: the readers share what either fetched.
        self.records = SharedRecords(bolna.get_execution, size=settings.bolna_record_cache_size,
                                     seconds=settings.bolna_record_cache_seconds)
        self.reader = PageReader(bolna, settings.default_phone_region, self.records,
                                 concurrency=settings.bolna_fetch_concurrency)
        self.feed = ExecutionFeed(db, bolna, self.reader, stop=self.stop,
                                  agent_ids=settings.bolna_agent_ids,
                                  backfill=timedelta(days=settings.backfill_days),
                                  overlap=timedelta(minutes=settings.sync_overlap_minutes))
        self.writers = build_writers(db, settings)
        self.customer_writer, self.call_writer = self.writers.customers, self.writers.calls
        self.analysis = build_analysis(db, settings, self.owner, self.stop)
        self.retention = RetentionPass(db, retention_policy(settings), self.stop)
        self.call_queue = self.analysis.queue
        self.batch_api = build_batch_api(db, settings, self.owner, self.analysis)
        self.runs = RunRecords(db)

    def run_job(self, name: str, *, full: bool = False) -> dict:
        """Run one job now and return its run record (also stored in `sync_runs`)."""
        if name not in JOBS:
            raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOB_NAMES)}")
        with self._idle:
            self._active_jobs += 1
        try:
            with log_context(account=None if self.tenant_id is None else str(self.tenant_id)):
                return self.runs.record(name, lambda recorder: JOBS[name].run(self, recorder, full))
        finally:
            with self._idle:
                self._active_jobs -= 1
                self._idle.notify_all()

    def analyze(self, recorder) -> None:
        """The call processor's second phase: the Batch API lane (its finished jobs applied, a
        backlog's overflow submitted), then this run's synchronous batch."""
        if self.batch_api is not None:
            try:
                self.batch_api.run(recorder)
            except Exception as exc:  # noqa: BLE001 - the synchronous lane must still run
                # A traceback for bugs; a database error's text would quote document values.
                recorder.error(f"Batch API lane failed: {describe_failure(exc)}", code="llm_batch_lane_failed",
                               exc_info=None if isinstance(exc, PyMongoError) else exc)
        self.analysis.run(recorder)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs; False if one still does after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active_jobs == 0, timeout)

    def close(self) -> None:
        self.reader.close()
        self.bolna.close()


class App(AccountApp):
    """Single-account mode (TENANT_SOURCE=env): the account's jobs, and the process's metrics,
    status and webhook path around them."""

    def __init__(self, settings: Settings, db: Database, bolna: BolnaClient, mongo_client=None, tenant_id=None):
        super().__init__(settings, db, bolna, tenant_id)
        db = self.db
        self.mongo_client = mongo_client
        self.metrics = RunMetrics(JOB_NAMES, queue_depth=self.call_queue.depth,
                                  llm_configured=bool(settings.groq_api_keys))
        self.metrics.observe_requests(self)
        self.metrics.observe_cursors(db)
        self._successes_loaded = False
        self.runs.subscribe(self.metrics.observe_run)
        # Webhooks: the inbox, its processor (started by the daemon with the listener) and the tally.
        self.inbox = Inbox(db[WEBHOOK_INBOX], self.owner, LEASE_SECONDS, clock=self.call_queue.clock,
                           max_waiting=settings.webhook_max_waiting)
        self.deliveries = DeliveryTally(db[WEBHOOK_DELIVERIES])
        observe_webhooks(self.metrics, self.deliveries, self.inbox.waiting)
        self.webhook_processor = InboxProcessor(self.inbox, lambda _account: self.writers, self.deliveries)
        self.webhook_routes = SingleRoute(settings.webhook_token, self.inbox) if settings.webhook_token else None
        self.status = StatusReader(db, settings.mongodb_db, self.runs, self.call_queue, self.inbox, self.deliveries,
                                   stale_after(settings.sync_interval_minutes))

    @classmethod
    def build(cls, settings: Settings, mongo_client=None, tenant_id=None) -> "App":
        """`mongo_client`: any pymongo-compatible client; default: a MongoClient on MONGODB_URI."""
        mongo_client = mongo_client or connect(settings)
        db = mongo_client[settings.mongodb_db]
        return cls(settings, db, BolnaClient.from_settings(settings, stop=threading.Event()), mongo_client, tenant_id)

    def prepare(self) -> None:
        """Start-up work that touches the database: indexes, and runs a dead process left open."""
        ensure_indexes(self.db, self.settings.run_retention_days, self.settings.webhook_inbox_days)
        # Before any sync: without the key the erased numbers could not be recognized.
        SuppressionList(self.db, hasher_for(self.settings.privacy_hash_key)).check_key()
        abandoned = self.runs.mark_abandoned(stale_after(self.settings.sync_interval_minutes))
        if abandoned:
            log.warning("marked %d run(s) left running by a stopped process as abandoned", abandoned)
        if (problem := self.analysis.check_llm()) is not None:
            log.warning("%s", problem, extra={"event": "llm_model_missing"})

    def subscribe(self, listener) -> None:
        """Called with each finished run record (as `Fleet.subscribe`)."""
        self.runs.subscribe(listener)

    def scheduled_jobs(self) -> list[ScheduledJob]:
        seconds = self.settings.sync_interval_minutes * 60
        return [ScheduledJob(name, functools.partial(self.run_job, name), seconds) for name in JOB_NAMES]

    def last_success_at(self, job: str) -> datetime | None:
        """From the run records the first time (a restart remembers), then from the runs seen."""
        if not self._successes_loaded:
            self.metrics.load_last_successes(self.runs)
            self._successes_loaded = True
        return self.metrics.last_success_at(job)

    def close(self) -> None:
        super().close()
        if self.mongo_client is not None:
            self.mongo_client.close()
