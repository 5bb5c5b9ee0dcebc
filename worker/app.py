"""Composition root: builds every part from settings, so tests and tools can hand in their own
MongoDB client (pymongo or mongomock) and point the HTTP clients at local servers."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from typing import Callable

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
from services.run_records import RunListener, RunRecords, describe_failure, stale_after
from services.server_clock import ServerClock
from services.webhooks import LEASE_SECONDS, AccountWriters, DeliveryTally, Inbox, InboxProcessor
from utils.config import Settings
from utils.logging import log_context
from worker.jobs import JOB_NAMES, JOBS, ScheduledJob
from worker.health import RunMetrics, observe_webhooks
from worker.webhook_listener import SingleRoute
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


def new_owner() -> str:
    """Unique per process and part: names its claims and leases (analyses, deliveries, accounts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
    parts. Single-account mode runs one for the process's life (`App` is one); with many accounts
    (worker/fleet.py) a replica builds one for each account it has claimed. Either way it is
    attached to the process's `Runtime` (`Runtime.attach`)."""

    def __init__(self, settings: Settings, db: Database, bolna: BolnaClient, tenant_id=None):
        """`tenant_id`: the account whose records this app reads and writes (`userId`); None, the
        single account of the environment."""
        self.settings = settings
        self.db = db = tenant_view(db, tenant_id)
        self.tenant_id = tenant_id
        self.bolna = bolna
        self.owner = new_owner()
        self.stop = bolna.stop  # set on SIGTERM: jobs end after their current write, waits end at once
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
        with log_context(account=None if self.tenant_id is None else str(self.tenant_id)):
            return self.runs.record(name, lambda recorder: JOBS[name].run(self, recorder, full))

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

    def close(self) -> None:
        self.reader.close()
        self.bolna.close()


class Runtime:
    """The process around the accounts' jobs, one code path for one account (`App`) and many
    (`worker/fleet.py`): the metrics and run listeners each account's app is attached to, the
    webhook inbox and its processor, start-up, the wait for running work, teardown. A subclass
    says which accounts run when (`scheduled_jobs`, `last_success_at`)."""

    settings: Settings
    db: Database
    mongo_client: MongoClient | None
    owner: str
    clock: Callable[[], datetime]

    @classmethod
    def build(cls, settings: Settings, mongo_client=None, **options):
        """`mongo_client`: any pymongo-compatible client; default: a MongoClient on MONGODB_URI."""
        mongo_client = mongo_client or connect(settings)
        return cls(settings, mongo_client[settings.mongodb_db], mongo_client=mongo_client, **options)

    def _serve(self, metrics: RunMetrics, inbox: Inbox, writers_for: Callable[[object], AccountWriters | None],
               routes: Callable[[str], object], tally: Database) -> None:
        """`inbox`: where the processor claims deliveries; `writers_for(account)`: who writes one;
        `routes(WEBHOOK_TOKEN)`: the listener's paths, when a token is set; `tally`: the view the
        deliveries are counted in."""
        self.metrics = metrics
        self._listeners: list[RunListener] = [metrics.observe_run]
        self._active = 0
        self._idle = threading.Condition()
        self.deliveries = DeliveryTally(tally[WEBHOOK_DELIVERIES])
        self.webhook_processor = InboxProcessor(inbox, writers_for, self.deliveries)
        observe_webhooks(metrics, self.deliveries, inbox.waiting)
        self.webhook_routes = routes(self.settings.webhook_token) if self.settings.webhook_token else None

    def inbox_of(self, tenant_id) -> Inbox:
        """The inbox an account's deliveries are accepted into (its view of `webhook_inbox`)."""
        return Inbox(tenant_view(self.db, tenant_id)[WEBHOOK_INBOX], self.owner, LEASE_SECONDS, clock=self.clock,
                     max_waiting=self.settings.webhook_max_waiting)

    def attach(self, account: AccountApp) -> None:
        """An account's finished runs to the listeners (with its `userId` when it is one of many),
        its requests to Bolna and Groq to the metrics."""
        for listener in self._listeners:
            _subscribe(account, listener)
        self.metrics.observe_requests(account.bolna.outcomes, account.analysis.llm)

    def subscribe(self, listener: RunListener) -> None:
        """Called with each finished run record of the accounts attached from now on."""
        self._listeners.append(listener)

    def prepare(self) -> None:
        """Start-up work that touches the database: indexes, runs a dead process left open (every
        account's, one query), and whether Groq knows the daemon's model."""
        ensure_indexes(self.db, self.settings.run_retention_days, self.settings.webhook_inbox_days)
        abandoned = RunRecords(self.db).mark_abandoned(stale_after(self.settings.sync_interval_minutes))
        if abandoned:
            log.warning("marked %d run(s) left running by a stopped process as abandoned", abandoned)
        # An account's own key meets a missing model in its first run, which then stops its LLM use.
        if self.settings.groq_api_keys and (problem := GroqAnalyzer(self.settings).check_model()) is not None:
            log.warning("%s", problem, extra={"event": "llm_model_missing"})

    @contextlib.contextmanager
    def _running(self):
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no work runs; False if some still does after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def close(self) -> None:
        if self.mongo_client is not None:
            self.mongo_client.close()


def _subscribe(account: AccountApp, listener: RunListener) -> None:
    account.runs.subscribe(listener if account.tenant_id is None
                           else lambda run: listener({**run, "userId": account.tenant_id}))


class App(AccountApp, Runtime):
    """Single-account mode (TENANT_SOURCE=env): one account, its app kept for the process's life
    and each job scheduled on its own every SYNC_INTERVAL_MINUTES."""

    def __init__(self, settings: Settings, db: Database, bolna: BolnaClient | None = None, mongo_client=None,
                 tenant_id=None):
        super().__init__(settings, db, bolna or BolnaClient.from_settings(settings, stop=threading.Event()),
                         tenant_id)
        self.mongo_client = mongo_client
        self.clock = self.call_queue.clock
        metrics = RunMetrics(JOB_NAMES, queue_depth=self.call_queue.depth, llm_configured=bool(settings.groq_api_keys))
        metrics.observe_cursors(self.db)
        self._successes_loaded = False
        self.inbox = self.inbox_of(tenant_id)
        self._serve(metrics, self.inbox, lambda _account: self.writers,
                    lambda token: SingleRoute(token, self.inbox), self.db)
        self.attach(self)
        self.status = StatusReader(self.db, settings.mongodb_db, self.runs, self.call_queue, self.inbox,
                                   self.deliveries, stale_after(settings.sync_interval_minutes))

    def prepare(self) -> None:
        super().prepare()
        # Before any sync: without the key the erased numbers could not be recognized.
        SuppressionList(self.db, hasher_for(self.settings.privacy_hash_key)).check_key()

    def run_job(self, name: str, *, full: bool = False) -> dict:
        with self._running():
            return super().run_job(name, full=full)

    def subscribe(self, listener: RunListener) -> None:
        super().subscribe(listener)
        _subscribe(self, listener)

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
        AccountApp.close(self)
        Runtime.close(self)
