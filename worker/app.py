"""Composition root: builds every part from settings, so tests and tools can hand in their own
MongoDB client (pymongo or mongomock) and point the HTTP clients at local servers; and the one
runtime (`Runtime`) that runs one account or many."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import groq
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from models.customer import StatusRanks
from services.analyzer.run import AnalysisRun, claim_lease_seconds
from services.analyzer.batch_api import BatchApiLane
from services.analyzer.claims import CallQueue
from services.analyzer.groq_analyzer import GroqAnalyzer
from services.bolna_client import BolnaAuthError, BolnaClient
from services.database import (CALLS, LLM_BATCHES, LLM_QUOTA, ACCOUNT_SCHEDULE, WEBHOOK_DELIVERIES, WEBHOOK_INBOX,
                               ensure_indexes, account_view)
from services.execution_feed import ExecutionFeed, PageReader, SharedRecords
from services.privacy import (Eraser, PrivacyGuard, RetentionPass, RetentionPolicy, SuppressionList,
                              hasher_for)
from services.run_records import RunListener, RunRecorder, RunRecords, describe_failure, failed_with, stale_after
from services.lease import ServerClock
from services.accounts.source import Account, AccountSource
from services.accounts.schedule import LeaseKeeper, LlmQuota, AccountClaim, AccountSchedule
from services.webhooks import LEASE_SECONDS, AccountWriters, DeliveryTally, Inbox, InboxProcessor
from services.writers import CallWriter, CustomerWriter
from utils.clock import utcnow
from utils.config import Settings
from utils.logging import Listeners, log_context
from worker.health import RunMetrics, observe_accounts, observe_webhooks
from worker.webhook_listener import AccountRoutes, account_token

log = logging.getLogger(__name__)

DEFAULT_SERVER_SELECTION_MS = 5000
# Uploading a batch job's input file (up to 90 MB) takes longer than an analysis request.
BATCH_API_TIMEOUT_SECONDS = 300.0
ACCOUNTS_PASS = "accounts"  # the daemon's one scheduled job with many accounts
# The jobs: the scheduler, the CLI's choices, the run records and the cursors in `sync_state` take
# their names from here; `AccountApp.run_job` runs them.
CRM_SYNC = "crm_sync"
CALL_PROCESSOR = "call_processor"
JOB_NAMES = (CRM_SYNC, CALL_PROCESSOR)


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
                   stop: threading.Event | None = None) -> AnalysisRun:
    """The call processor's second phase. `owner` (unique per process) marks this process's claims;
    `stop` ends a batch early. Without a Groq key every call gets the heuristic analysis."""
    queue = CallQueue(db[CALLS], owner, claim_lease_seconds(settings), clock=ServerClock(db).now)
    llm = GroqAnalyzer(settings) if settings.groq_api_keys else None
    return AnalysisRun(db, queue, settings, llm, stop)


def build_batch_api(db: Database, settings: Settings, owner: str, analysis: AnalysisRun) -> BatchApiLane | None:
    """The Groq Batch API lane for backlogs; None without a Groq key or with LLM_BATCH_MODE=off."""
    if not settings.groq_api_keys or settings.llm_batch_mode == "off":
        return None
    # The SDK's own retries (2): these few requests have no retry loop of ours around them.
    client = groq.Groq(api_key=settings.groq_api_keys[0], base_url=settings.groq_base_url,
                       timeout=BATCH_API_TIMEOUT_SECONDS)
    return BatchApiLane(db[LLM_BATCHES], analysis.outcomes, settings, client, owner)


def build_writers(db: Database, settings: Settings) -> AccountWriters:
    """One account's call and customer writers (`db`: its view), behind its suppression list:
    the poll's, and the webhook processor's for the account's deliveries."""
    guard = PrivacyGuard(SuppressionList(db, hasher_for(settings.privacy_hash_key)),
                         Eraser(db, settings.default_phone_region))
    return AccountWriters(CallWriter(db, guard, RetentionPolicy(settings.transcript_retention_days,
                                                                settings.record_retention_days)),
                          CustomerWriter(db, StatusRanks(settings.status_precedence), guard),
                          settings.default_phone_region)


class AccountApp:
    """One account's half of the daemon: its Bolna client, its view of the database, both jobs'
    parts. The `Runtime` keeps one for the process's life with one account, and builds one for
    each account it has claimed with many; either way attached to it (`Runtime.attach`)."""

    def __init__(self, settings: Settings, db: Database, bolna: BolnaClient, account_id=None):
        """`account_id`: the account whose records this app reads and writes (`userId`); None, the
        single account of the environment."""
        self.settings = settings
        self.db = db = account_view(db, account_id)
        self.account_id = account_id
        self.bolna = bolna
        self.owner = new_owner()
        self.stop = bolna.stop  # set on SIGTERM: jobs end after their current write, waits end at once
        # One full-record read per call for both jobs: the readers share what either fetched.
        self.records = SharedRecords(bolna.get_execution, size=settings.bolna_record_cache_size,
                                     seconds=settings.bolna_record_cache_seconds)
        self.reader = PageReader(bolna, settings.default_phone_region, self.records,
                                 concurrency=settings.bolna_fetch_concurrency)
        self.feed = ExecutionFeed(db, bolna, self.reader, agent_ids=settings.bolna_agent_ids,
                                  backfill=timedelta(days=settings.backfill_days),
                                  overlap=timedelta(minutes=settings.sync_overlap_minutes))
        self.writers = build_writers(db, settings)
        self.analysis = build_analysis(db, settings, self.owner, self.stop)
        self.retention = RetentionPass(db, self.writers.calls.retention, self.stop)
        self.call_queue = self.analysis.queue
        self.batch_api = build_batch_api(db, settings, self.owner, self.analysis)
        self.runs = RunRecords(db)

    def run_job(self, name: str, *, full: bool = False) -> dict:
        """Run one job now and return its run record (also stored in `sync_runs`)."""
        body = {CRM_SYNC: self.sync_customers, CALL_PROCESSOR: self.process_calls}.get(name)
        if body is None:
            raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOB_NAMES)}")
        with log_context(account=None if self.account_id is None else str(self.account_id)):
            return self.runs.record(name, lambda recorder: body(recorder, full))

    def sync_customers(self, recorder: RunRecorder, full: bool) -> None:
        """Bolna executions -> customers."""
        self.feed.run(CRM_SYNC, self.writers.customers, recorder, full=full)

    def process_calls(self, recorder: RunRecorder, full: bool) -> None:
        """Bolna executions -> calls, then LLM analysis -> contacts (the Batch API lane: its
        finished jobs applied, a backlog's overflow submitted; then this run's synchronous batch),
        then retention."""
        try:
            self.feed.run(CALL_PROCESSOR, self.writers.calls, recorder, full=full)
        finally:
            try:
                # Calls stored by earlier runs are still worth analyzing when Bolna is down.
                if self.batch_api is not None:
                    try:
                        self.batch_api.run(recorder)
                    except Exception as exc:  # noqa: BLE001 - the synchronous lane must still run
                        # A traceback for bugs; a database error's text would quote document values.
                        recorder.error(f"Batch API lane failed: {describe_failure(exc)}",
                                       code="llm_batch_lane_failed",
                                       exc_info=None if isinstance(exc, PyMongoError) else exc)
                self.analysis.run(recorder)
            finally:
                # Retention is this job's last pass: the job that writes `calls` also ages them out,
                # after its own analysis, whether Bolna or the LLM answered or not (docs/privacy.md).
                self.retention.run(recorder)

    def close(self) -> None:
        self.reader.close()
        self.bolna.close()


@dataclass(frozen=True)
class ScheduledJob:
    """What the daemon runs on an interval: each job (one account), or the accounts' pass (many);
    `last_success_at`: when it last got on, for health."""
    name: str
    run: Callable[[], object]
    seconds: float
    last_success_at: Callable[[], datetime | None]


def account_settings(settings: Settings, account: Account, llm_limit: int | None = None) -> Settings:
    """The daemon's settings with what the account brings: its keys, agents, region and limits."""
    changes: dict = {"bolna_api_key": account.bolna_api_key, "bolna_agent_ids": account.agent_ids}
    if account.groq_api_key:
        changes["groq_api_keys"] = (account.groq_api_key,)
    if account.phone_region:
        changes["default_phone_region"] = account.phone_region
    if llm_limit is not None:
        changes["llm_calls_per_run"] = llm_limit
    if account.bolna_requests_per_minute:
        # Below Bolna's limits for the organisation, never above them.
        changes["bolna_listing_rate_per_minute"] = min(settings.bolna_listing_rate_per_minute,
                                                       account.bolna_requests_per_minute)
        changes["bolna_rate_per_minute"] = min(settings.bolna_rate_per_minute, account.bolna_requests_per_minute)
    return settings.with_overrides(**changes)


class Runtime:
    """The daemon's process, one for one account and many: the accounts and when each is synced,
    the metrics and run listeners every account's app is attached to, the webhook inbox and its
    processor, start-up, `status`, the wait for running work, teardown.

    One account (ACCOUNT_SOURCE unset: the environment's; or `account_id`, one of many named on the
    command line) is a fleet of one whose app (`account`) is kept for the process's life. Many
    (ACCOUNT_SOURCE=mongodb): every ACCOUNT_POLL_SECONDS a pass claims due accounts under a lease
    and runs both jobs for each with its own keys, limits and view of the database (an `AccountApp`
    each), shared with the other replicas (docs/scaling.md, "How the work is shared").

    Only `__init__`, `prepare`, `scheduled_jobs` and `close` tell the two apart (`account` is None
    with many). The one account is no entry of the shared schedule on purpose: it writes nothing to
    `tenant_schedule`, each job keeps its own interval and its own last success for health, and its
    metrics show its queue and cursors (series per account, with many, would be unbounded)."""

    def __init__(self, settings: Settings, db: Database, *, mongo_client=None, bolna: BolnaClient | None = None,
                 account_id=None, clock: Callable[[], datetime] | None = None):
        """`bolna`: the one account's client (default: from the settings); `clock`: what leases,
        quota windows and the inbox are measured by, the database server's unless given."""
        self.settings = settings
        self.mongo_client = mongo_client
        self.owner = new_owner()
        self.clock = clock or ServerClock(db).now
        self._finished = Listeners("run_listener_failed")  # every attached account's runs
        self._active = 0
        self._idle = threading.Condition()
        self._progress_at: datetime | None = None
        self._accounts: dict[object, Account] = {}
        self._loaded_at: float | None = None
        self._refresh_lock = threading.Lock()
        self._account_inboxes: dict[object, Inbox] = {}
        self.webhook_routes = AccountRoutes(self._account_inbox) if settings.webhook_token else None
        llm_configured = bool(settings.groq_api_keys)
        if settings.account_source == "mongodb" and account_id is None:
            self.account = None
            self.db, self.stop = db, threading.Event()
            interval = timedelta(minutes=settings.sync_interval_minutes)
            self.source = AccountSource(settings, db)
            self.schedule = AccountSchedule(db[ACCOUNT_SCHEDULE], self.owner, settings.account_lease_seconds,
                                           interval.total_seconds(), clock=self.clock)
            self.quota = (LlmQuota(db[LLM_QUOTA], settings.llm_global_limit, interval, self.clock)
                          if settings.llm_global_limit is not None else None)
            # Across accounts: counts by job and status, and accounts by state; never by account
            # (bounded cardinality).
            self.metrics = RunMetrics(JOB_NAMES, queue_depth=None, llm_configured=llm_configured)
            observe_accounts(self.metrics, self.schedule.counts)
            writers_for = self._writers_for
        else:
            self.account = account = AccountApp(settings, db, bolna or BolnaClient.from_settings(settings), account_id)
            self.db, self.stop = account.db, account.stop
            self.metrics = RunMetrics(JOB_NAMES, queue_depth=account.call_queue.depth, llm_configured=llm_configured)
            self.metrics.observe_cursors(self.db)
            writers_for = lambda _account_id: account.writers  # noqa: E731
            if self.webhook_routes is not None:
                self.webhook_routes.update({settings.webhook_token: account_id})
            self.attach(account)
        # The processor claims from the inbox of every account this runtime serves (its `db`).
        self.inbox = self._inbox(self.db)
        self.deliveries = DeliveryTally(account_view(db, account_id)[WEBHOOK_DELIVERIES])
        self.webhook_processor = InboxProcessor(self.inbox, writers_for, self.deliveries)
        observe_webhooks(self.metrics, self.deliveries, self.inbox.waiting)
        self._finished.subscribe(self.metrics.observe_run)

    @classmethod
    def build(cls, settings: Settings, mongo_client=None, **options) -> Runtime:
        """`mongo_client`: any pymongo-compatible client; default: a MongoClient on MONGODB_URI."""
        mongo_client = mongo_client or connect(settings)
        return cls(settings, mongo_client[settings.mongodb_db], mongo_client=mongo_client, **options)

    def _inbox(self, db) -> Inbox:
        """`webhook_inbox` as `db` sees it: an account's view accepts its deliveries."""
        return Inbox(db[WEBHOOK_INBOX], self.owner, LEASE_SECONDS, clock=self.clock,
                     max_waiting=self.settings.webhook_max_waiting)

    def _account_inbox(self, account_id) -> Inbox:
        """The one inbox of an account in this process: it keeps the count its cap is checked by."""
        inboxes = self._account_inboxes
        if account_id not in inboxes:  # setdefault: two threads at once still share one
            inboxes.setdefault(account_id, self._inbox(account_view(self.db, account_id)))
        return inboxes[account_id]

    def attach(self, account: AccountApp) -> None:
        """An account's finished runs to the listeners (with its `userId` when it has one), its
        requests to Bolna and Groq to the metrics."""
        stamp = {} if account.account_id is None else {"userId": account.account_id}
        account.runs.subscribe(lambda run: self._finished({**run, **stamp}))
        self.metrics.observe_requests(account.bolna.outcomes, account.analysis.llm)

    def subscribe(self, listener: RunListener) -> None:
        """Called with each finished run record of every account attached, before or after."""
        self._finished.subscribe(listener)

    def prepare(self) -> None:
        """Start-up work that touches the database: indexes, runs a dead process left open (every
        account's, one query), whether Groq knows the daemon's model; then the one account's
        suppression key, or the list of many accounts."""
        ensure_indexes(self.db, self.settings.run_retention_days, self.settings.webhook_inbox_days)
        abandoned = RunRecords(self.db).mark_abandoned(stale_after(self.settings.sync_interval_minutes))
        if abandoned:
            log.warning("marked %d run(s) left running by a stopped process as abandoned", abandoned)
        # An account's own key meets a missing model in its first run, which then stops its LLM use.
        if self.settings.groq_api_keys and (problem := GroqAnalyzer(self.settings).check_model()) is not None:
            log.warning("%s", problem, extra={"event": "llm_model_missing"})
        if self.account is not None:
            # Before any sync: without the key the erased numbers could not be recognized.
            SuppressionList(self.db, hasher_for(self.settings.privacy_hash_key)).check_key()
            self.metrics.load_last_successes(self.account.runs)  # health: a restart remembers
        else:
            self.refresh(force=True)

    def scheduled_jobs(self) -> list[ScheduledJob]:
        """One account: each job, on its own, healthy by its last success (loaded by `prepare`,
        then from the runs seen). Many: the pass, healthy by when this replica last got on, by
        finishing an account's sync or a pass that found none due: under a standing backlog no pass
        ends, and the replica is healthy while it keeps finishing accounts."""
        if self.account is None:
            return [ScheduledJob(ACCOUNTS_PASS, self.work, self.settings.account_poll_seconds,
                                 lambda: self._progress_at)]
        return [ScheduledJob(name, functools.partial(self.run_job, name), self.settings.sync_interval_minutes * 60,
                             functools.partial(self.metrics.last_success_at, name)) for name in JOB_NAMES]

    def run_job(self, name: str, *, full: bool = False) -> dict:
        with self._running():
            return self.account.run_job(name, full=full)

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the accounts when the last read is ACCOUNT_REFRESH_SECONDS old: new accounts join
        the schedule, a changed key lifts a refusal, accounts gone are retired."""
        with self._refresh_lock:
            if not force and self._loaded_at is not None and (
                    time.monotonic() - self._loaded_at < self.settings.account_refresh_seconds):
                return
            listed = self.source.load()
            self.schedule.register([(account.id, account.key_fingerprint) for account in listed.accounts])
            self._accounts = {account.id: account for account in listed.accounts}
            if self.webhook_routes is not None:
                self.webhook_routes.update({account_token(self.settings.webhook_token, account_id): account_id
                                            for account_id in self._accounts})
            self._loaded_at = time.monotonic()
            log.info("%d account(s) listed, %d skipped", len(listed.accounts), len(listed.skipped),
                     extra={"event": "accounts_loaded"})

    def work(self, ahead: timedelta = timedelta(0)) -> int:
        """One pass (the daemon's job every ACCOUNT_POLL_SECONDS): sync due accounts, a few at a
        time, until none is due or the daemon stops. Returns how many were synced. `ahead`: also
        the accounts due within that time (`main.py once` passes an interval: every account)."""
        with self._running():
            self.refresh()
            due_by = self.schedule.clock() + ahead if ahead else None
            with ThreadPoolExecutor(self.settings.account_concurrency, thread_name_prefix="account") as pool:
                synced = sum(pool.map(lambda _: self._drain(due_by), range(self.settings.account_concurrency)))
            self._progress_at = utcnow()
            return synced

    def _drain(self, due_by: datetime | None) -> int:
        synced = 0
        while not self.stop.is_set() and (claim := self.schedule.claim_due(due_by)) is not None:
            try:
                with log_context(account=str(claim.account_id)):
                    self.sync(claim, due_by)
                synced += 1
            except Exception as exc:  # noqa: BLE001 - one account's failure must not end the pass for the others
                log.exception("account %s: its sync failed; it is tried again at its next slot", claim.account_id,
                              extra={"event": "account_failed"})
                try:
                    self.schedule.finish(claim, {"status": "failed", "error": describe_failure(exc)}, after=due_by)
                except Exception:  # noqa: BLE001 - MongoDB away: the lease runs out and another claim takes it
                    log.warning("could not record an account's failed sync", exc_info=True)
        return synced

    def sync(self, claim: AccountClaim, due_by: datetime | None = None) -> None:
        """Both jobs for the claimed account, under its lease; the schedule records the result
        (its next slot after `due_by`, the pass's horizon, so the pass does not meet it again)."""
        account = self._account(claim.account_id)
        if account is None:  # retired by the new read (a release alone would be claimed again at once)
            self.schedule.release(claim)
            return
        grant = self.quota.take(account.llm_batch_limit or self.settings.llm_calls_per_run) if self.quota else None
        settings = account_settings(self.settings, account, grant.count if grant else account.llm_batch_limit)
        lease = LeaseKeeper(self.schedule, claim, self.stop)
        # The account's jobs stop on the lease's stop: the process's, or the lease's own end.
        app = AccountApp(settings, self.db, BolnaClient.from_settings(settings, stop=lease.stop), account.id)
        self.attach(app)
        runs: list[dict] = []
        try:
            with lease:
                for job in JOB_NAMES:
                    runs.append(app.run_job(job))
                    if _refused(runs[-1]) or self.stop.is_set() or lease.lost:
                        break
        finally:
            app.close()
            if grant is not None:
                counts = next((run.get("counts", {}) for run in runs if run["job"] == CALL_PROCESSOR), {})
                grant.settle(int(counts.get("analyzed", 0) + counts.get("failed", 0)))
        self._record(claim, account, runs, lease.lost, due_by)
        self._progress_at = utcnow()

    def _record(self, claim: AccountClaim, account: Account, runs: list[dict], lease_lost: bool,
                due_by: datetime | None) -> None:
        if lease_lost:  # logged by the lease; whoever holds the account now records its own sync
            return
        if any(_refused(run) for run in runs):
            log.warning("account %s: Bolna refused its key; set aside until the key changes", account.label,
                        extra={"event": "account_refused"})
            self.schedule.mark_refused(claim, "Bolna refused the account's API key",
                                       key_fingerprint=account.key_fingerprint)
        elif len(runs) < len(JOB_NAMES):  # stopping: another replica (or this one, restarted) syncs it soon
            self.schedule.release(claim)
        else:
            statuses = {run["status"] for run in runs}
            worst = next((status for status in ("failed", "partial") if status in statuses), "ok")
            self.schedule.finish(claim, {"status": worst, "runs": {run["job"]: run["_id"] for run in runs},
                                         "errors": sum(run.get("errorCount", 0) for run in runs)}, after=due_by)

    def _writers_for(self, account_id) -> AccountWriters | None:
        """The writers of a delivery's account; None when the account is no longer listed."""
        account = self._account(account_id)
        return None if account is None else build_writers(account_view(self.db, account.id),
                                                         account_settings(self.settings, account))

    def _account(self, account_id) -> Account | None:
        """The listed account; one unknown to this replica's last read (listed by another replica's
        newer read, or gone since ours) after reading the list again, None if it is gone."""
        if account_id not in self._accounts:
            self.refresh(force=True)
        return self._accounts.get(account_id)

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
        if self.account is not None:
            self.account.close()
        if self.mongo_client is not None:
            self.mongo_client.close()


def _refused(run: dict) -> bool:
    return failed_with(run, BolnaAuthError)
