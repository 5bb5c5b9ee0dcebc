"""The daemon's health, as its supervisors read it: systemd's notify protocol and watchdog, the
optional HTTP listener (HEALTH_PORT: `/livez`, `/readyz`, `/healthz`, `/metrics`, docs/operations.md)
and the Prometheus metrics it serves. The listener runs on the webhook listener's bounded server
(one event loop: idle or slow clients cost a socket each, never a thread).

The metrics are taken from the run records the daemon writes (a `RunRecords` listener), so they
say exactly what the stored run records say. What only MongoDB knows (the analysis queue depth,
the accounts by state) is read after each run and every few seconds, under a timeout: a scrape
never waits for MongoDB.

systemd (sd_notify(3)) is hand-written rather than a library: the protocol is this small, and the
maintained bindings (python-systemd, sdnotify) add a C build or an unmaintained package for it.
The watchdog is fed from the scheduler's own progress, never from a thread that pings whatever
happens: a hung job, or a scheduler that no longer runs its jobs, stops the pings (`JobWatch`),
and systemd (WatchdogSec) kills and restarts it; the same rule answers /livez."""
from __future__ import annotations

import itertools
import logging
import os
import platform
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable

import pymongo
from prometheus_client import (CONTENT_TYPE_LATEST, GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR,
                               CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from pymongo.errors import PyMongoError

from services.analyzer.write_back import OUTCOME_COUNTERS
from services.database import SYNC_STATE
from utils.http import OUTCOMES as REQUEST_OUTCOMES
from utils.logging import Listeners
from services.run_records import SUCCESSFUL, RunRecords, describe_failure
from services.sync_state import oldest_cursor
from services.webhooks import OUTCOMES, DeliveryTally
from utils.clock import unix_seconds, utcnow
from worker.webhook_listener import JSON, BoundedServer, ConnectionLimits, respond

if TYPE_CHECKING:
    from pymongo.database import Database

    from services.analyzer.groq_analyzer import GroqAnalyzer

log = logging.getLogger(__name__)

READY = "READY=1"
WATCHDOG = "WATCHDOG=1"
STOPPING = "STOPPING=1"
READ_TIMEOUT_SECONDS = 5.0
MAX_HEAD_BYTES = 8192
CHECK_THREADS = 2
# /readyz: MongoDB must answer a ping within this; a probe's own timeout should be longer.
PING_TIMEOUT_SECONDS = 2.0
# Values /metrics shows that are read from MongoDB are read again this often (by the daemon's
# refresh job; with one account also after each run).
METRICS_REFRESH_SECONDS = 15.0
# A read for a refreshed gauge that takes longer is given up; the gauge keeps its last value.
REFRESH_TIMEOUT_SECONDS = 2.0
RUN_STATUSES = ("ok", "partial", "failed")
WRITE_COUNTS = ("inserted", "updated")
TOKEN_KINDS = {"prompt": "promptTokens", "completion": "completionTokens"}
# Seconds from Bolna's `updated_at` to the call's write: Bolna's own delay is part of it.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# A run lasts from seconds (nothing new) to many minutes (a first sync, a backlog of analyses).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def notify(*fields: str) -> bool:
    """Send one message to systemd; False when not run under a notify unit (no $NOTIFY_SOCKET) or
    when it cannot be delivered (a supervisor gone must not stop the daemon)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", fields[0], type(exc).__name__,
                    extra={"event": "notify_failed"})
        return False
    return True


def watchdog_seconds() -> float | None:
    """WatchdogSec as systemd passes it ($WATCHDOG_USEC, for $WATCHDOG_PID when set); None when the
    unit has no watchdog."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        log.warning("WATCHDOG_USEC is not a number: ignored", extra={"event": "notify_failed"})
        return None
    return seconds if seconds > 0 else None


class JobWatch:
    """Which scheduled jobs are running, and since when each last made progress (its start, or a
    `progress` call: with many accounts, each account's sync finished)."""

    def __init__(self, deadline_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.deadline_seconds = deadline_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._busy_since: dict[str, float] = {}
        self._names: set[str] = set()
        self._stalled = False

    def watched(self, name: str, run: Callable[[], object]) -> Callable[[], object]:
        self._names.add(name)
        def run_watched():
            with self._lock:
                self._busy_since[name] = self._clock()
            try:
                return run()
            finally:
                with self._lock:
                    self._busy_since.pop(name, None)
        return run_watched

    def progress(self, run: dict) -> None:
        """A run finished (a run listener): its job got on, or, when it is no scheduled job's own
        run (an account's, in the accounts' pass), every running job did."""
        with self._lock:
            now = self._clock()
            names = [run["job"]] if run.get("job") in self._names else list(self._busy_since)
            for name in names:
                if name in self._busy_since:
                    self._busy_since[name] = now

    def overdue(self) -> dict[str, float]:
        """The jobs running past the deadline without progress: name -> seconds since."""
        with self._lock:
            now = self._clock()
            return {name: now - since for name, since in self._busy_since.items()
                    if now - since > self.deadline_seconds}

    def heartbeat(self, send: Callable[..., bool] = notify) -> None:
        """The scheduler's heartbeat job: WATCHDOG=1 while no job is overdue."""
        overdue = self.overdue()
        if overdue:
            if not self._stalled:  # said once, not at every beat
                log.error("watchdog: %s past the deadline of %.0fs without progress; no longer telling "
                          "systemd all is well", ", ".join(f"{name} ({seconds:.0f}s)" for name, seconds in overdue.items()),
                          self.deadline_seconds, extra={"event": "watchdog_stalled"})
            self._stalled = True
            return
        if self._stalled:
            log.info("watchdog: the jobs got on again", extra={"event": "watchdog_resumed"})
            self._stalled = False
        send(WATCHDOG)


def _verdict(reasons: list[str], good: str, bad: str, **more) -> tuple[str, dict, str]:
    body = {"status": bad if reasons else good, "reasons": reasons, **more}
    return "503 Service Unavailable" if reasons else "200 OK", body, JSON


class RunMetrics:
    def __init__(self, jobs: Iterable[str], *, queue_depth: Callable[[], int] | None, llm_configured: bool = False):
        """`queue_depth`: how many calls wait for analysis (one account); None with many accounts
        (each account's queue is its own, and a count across them would scan). With one account the
        refreshed gauges are read again after each run; with many only by the daemon's refresh job,
        every few seconds, not once per account's run."""
        self._refresh_after_runs = queue_depth is not None
        self.jobs = tuple(jobs)
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._last_success: dict[str, datetime] = {}
        self._last_status: dict[str, str] = {}
        self._refreshed: list[tuple[str, str, Callable[[], object], str | None]] = []
        self._families: dict[str, GaugeMetricFamily] = {}
        registry = self.registry
        registry.register(self)
        self.runs = self.counter("callsync_runs", "Job runs finished, by job and status",
                                 job=self.jobs, status=RUN_STATUSES)
        self.records_written = self.counter(
            "callsync_records_written",
            "Documents written by the jobs (crm_sync: customers, call_processor: calls), by operation",
            job=self.jobs, operation=WRITE_COUNTS)
        self.run_errors = self.counter("callsync_run_errors", "Errors recorded on job runs", job=self.jobs)
        self.analyses = self.counter("callsync_llm_calls", "Calls taken from the analysis queue, by outcome",
                                     outcome=OUTCOME_COUNTERS)
        self.fallbacks = self.counter("callsync_llm_fallbacks",
                                      "Analyses made by the offline heuristic instead of the LLM")
        self.tokens = self.counter("callsync_llm_tokens", "LLM tokens used, by kind", kind=TOKEN_KINDS)
        self.cost = self.counter("callsync_llm_cost_usd",
                                 "Estimated LLM cost in US dollars, from the price table (LLM_PRICES)")
        self.fallback_ratio = Gauge(
            "callsync_llm_fallback_ratio",
            "Share of analyses made by the offline heuristic, in the last run that analyzed any call",
            registry=registry)
        self.last_success = Gauge("callsync_last_success_timestamp_seconds",
                                  "When the last ok or partial run of each job finished (Unix time)",
                                  ["job"], registry=registry)
        self.budget_spent = self.counter(
            "callsync_llm_budget_exhausted",
            "Runs whose LLM request budget (LLM_REQUEST_BUDGET) ran out, leaving calls queued")
        # 1 when a Groq key is set (with many accounts: the daemon's own): without one every
        # analysis is the heuristic's by design, and the fallback ratio is no alarm.
        Gauge("callsync_llm_configured", "1 when a Groq API key is configured", registry=registry).set(
            int(llm_configured))
        self.duration = Histogram("callsync_run_duration_seconds", "How long each finished run took, by job",
                                  ["job"], buckets=DURATION_BUCKETS, registry=registry)
        self.bolna_requests = self.counter("callsync_bolna_requests", "Requests to Bolna's API, by outcome "
                                           "(ok, retried, 429, error)", outcome=REQUEST_OUTCOMES)
        self.llm_requests = self.counter("callsync_llm_requests", "Requests to Groq's chat completions, by "
                                         "outcome (ok, retried, 429, error)", outcome=REQUEST_OUTCOMES)
        Info("callsync_build", "The running build", registry=registry).info(
            # Set by the image build (Dockerfile's CALLSYNC_VERSION).
            {"version": os.environ.get("CALLSYNC_VERSION") or "dev", "python": platform.python_version()})
        # The process's CPU, memory, file descriptors and start time; the interpreter's GC.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        if queue_depth is not None:
            self.refreshed("callsync_analysis_queue_depth", "Calls stored final and not analyzed yet", queue_depth)

    def counter(self, name: str, help: str, **labels: Iterable[str]) -> Counter:
        """`labels`: each label's values, every series of them created at once, so a rate over the
        first failure is not lost."""
        counter = Counter(name, help, list(labels), registry=self.registry)
        if labels:
            for values in itertools.product(*labels.values()):
                counter.labels(*values)
        return counter

    def refreshed(self, name: str, help: str, read: Callable[[], object], label: str | None = None) -> None:
        """A gauge of what `read` returns from MongoDB: what it counts also changes by other daemons'
        work (another replica, `reanalyze`), so it is read again by `refresh`, never at a scrape, which
        shows the last value read (no series before the first read succeeded). `label`: the read
        returns a number per value of it."""
        self._refreshed.append((name, help, read, label))

    def refresh(self) -> None:
        for name, help, read, label in self._refreshed:
            try:
                with pymongo.timeout(REFRESH_TIMEOUT_SECONDS):
                    value = read()
            except PyMongoError as exc:
                # The last value stays; the scrape answers at once with it and every other metric.
                log.warning("%s not refreshed: %s", name, type(exc).__name__, extra={"event": "metrics_degraded"})
                continue
            if label is None:
                family = GaugeMetricFamily(name, help, value=value)
            else:
                family = GaugeMetricFamily(name, help, labels=[label])
                for key, number in value.items():
                    family.add_metric([key], number)
            self._families[name] = family  # whole: a scrape sees one read or the next

    def collect(self) -> list[GaugeMetricFamily]:
        """The registry's collector of the refreshed gauges."""
        return list(self._families.values())

    def observe_requests(self, bolna: Listeners, llm: GroqAnalyzer | None) -> None:
        bolna.subscribe(lambda outcome: self.bolna_requests.labels(outcome).inc())
        if llm is not None:
            llm.outcomes.subscribe(lambda outcome: self.llm_requests.labels(outcome).inc())

    def observe_cursors(self, db: Database) -> None:
        """Each job's oldest cursor, in single-account mode (`db`: the account's view). With many
        accounts there is none: a series per account is unbounded, and the oldest over all of them
        would scan every account's state (`status --account` shows one account's)."""
        def read() -> dict[str, float]:
            cursors = {job: oldest_cursor(db[SYNC_STATE], job) for job in self.jobs}
            return {job: unix_seconds(cursor) for job, cursor in cursors.items() if cursor is not None}
        self.refreshed("callsync_cursor_timestamp_seconds",
                       "Each job's oldest cursor (Unix time, by Bolna's clock): every call created before it "
                       "is stored; time() minus it is the sync's lag", read, label="job")

    def last_status(self, job: str) -> str | None:
        with self._lock:
            return self._last_status.get(job)

    def load_last_successes(self, runs: RunRecords) -> None:
        for job in self.jobs:
            record = runs.last_success(job)
            if record and record.get("finishedAt"):
                self._set_last_success(job, record["finishedAt"])

    def observe_run(self, run: dict) -> None:
        """A `RunRecords` listener: count one finished run's record."""
        job, counts = run["job"], run.get("counts", {})
        self.runs.labels(job, run["status"]).inc()
        for operation in WRITE_COUNTS:
            self.records_written.labels(job, operation).inc(counts.get(operation, 0))
        self.run_errors.labels(job).inc(counts.get("errors", 0))
        for outcome, counter in OUTCOME_COUNTERS.items():
            self.analyses.labels(outcome).inc(counts.get(counter, 0))
        for kind, counter in TOKEN_KINDS.items():
            self.tokens.labels(kind).inc(counts.get(counter, 0))
        self.cost.inc(counts.get("costUsd", 0))
        self.budget_spent.inc(counts.get("llmBudgetSpent", 0))
        fallbacks = counts.get("fallback", 0)
        self.fallbacks.inc(fallbacks)
        # Both ok and failed analyses may carry a heuristic result; skips carry none.
        analyzed = counts.get("analyzed", 0) + counts.get("failed", 0)
        if analyzed:
            self.fallback_ratio.set(fallbacks / analyzed)
        if run["status"] in SUCCESSFUL:
            self._set_last_success(job, run["finishedAt"])
        self.duration.labels(job).observe((run["finishedAt"] - run["startedAt"]).total_seconds())
        with self._lock:
            self._last_status[job] = run["status"]
        if self._refresh_after_runs:
            self.refresh()  # what the run changed in MongoDB, shown at the next scrape

    def last_success_at(self, job: str) -> datetime | None:
        with self._lock:
            return self._last_success.get(job)

    def _set_last_success(self, job: str, finished_at: datetime) -> None:
        with self._lock:
            self._last_success[job] = finished_at
        self.last_success.labels(job).set(unix_seconds(finished_at))


def observe_webhooks(metrics: RunMetrics, tally: DeliveryTally, waiting: Callable[[], int]) -> None:
    """Webhook deliveries by outcome and the lag of their writes, as this process sees them; the
    inbox's deliveries waiting to be written (`waiting`, read by the refresh)."""
    metrics.refreshed("callsync_webhook_inbox_waiting", "Webhook deliveries stored and not written yet", waiting)
    deliveries = metrics.counter("callsync_webhook_deliveries", "Webhook deliveries, by outcome", outcome=OUTCOMES)
    lag = Histogram("callsync_webhook_lag_seconds",
                    "Seconds from Bolna's updated_at of a delivered call to its write", buckets=LAG_BUCKETS,
                    registry=metrics.registry)
    tally.on_outcome = lambda outcome, n: deliveries.labels(outcome).inc(n)
    tally.on_lag = lag.observe


def observe_accounts(metrics: RunMetrics, counts: Callable[[], dict[str, int]]) -> None:
    """Accounts by schedule state (running, due, waiting, refused, retired), read by the refresh."""
    metrics.refreshed("callsync_accounts", "Accounts in the schedule, by state (ACCOUNT_SOURCE=mongodb)", counts,
                      label="state")


class HealthServer:
    """The listener on HEALTH_HOST:HEALTH_PORT for `service` (a worker.app.Runtime): /livez, /readyz
    and /healthz as docs/operations.md ("Probes") says, and /metrics. `watch`: the jobs' deadlines,
    for /livez. A job that has not succeeded since the daemon started (`started_at`, default now) is
    measured from the start: a fresh install, or a daemon restarted after downtime, is healthy for
    that long while its first runs catch up."""

    def __init__(self, service, is_scheduling: Callable[[], bool], started_at: datetime | None = None,
                 watch: JobWatch | None = None, *, read_timeout: float = READ_TIMEOUT_SECONDS):
        settings = service.settings
        self.max_age = timedelta(minutes=settings.sync_interval_minutes) * settings.health_max_age_intervals
        self.jobs = service.scheduled_jobs()
        self.started_at = started_at or utcnow()
        self._service = service
        self._is_scheduling = is_scheduling
        self._watch = watch
        self._routes: dict[str, Callable[[], tuple[str, dict | bytes, str]]] = {
            "/livez": self.live, "/readyz": self.ready, "/healthz": self.healthy,
            "/metrics": lambda: ("200 OK", generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST),
        }
        # The webhook listener's bounded server (4,096 connections); no bound per address: every
        # probe may come from one.
        limits = ConnectionLimits(idle_seconds=read_timeout, request_seconds=read_timeout)
        self._server = BoundedServer(self, "health-listener", host=settings.health_host, port=settings.health_port,
                                     limits=limits, unbounded_peer=lambda _peer: True, threads=CHECK_THREADS,
                                     max_request_header_size=MAX_HEAD_BYTES, max_request_body_size=MAX_HEAD_BYTES)
        self.address = self._server.address

    def live(self) -> tuple[str, dict, str]:
        return _verdict(self._live_reasons(), "ok", "not live")

    def ready(self) -> tuple[str, dict, str]:
        reasons = self._live_reasons()
        try:
            with pymongo.timeout(PING_TIMEOUT_SECONDS):
                self._service.db.command("ping")
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "not ready", said in the body
            reasons.append(f"MongoDB did not answer a ping within {PING_TIMEOUT_SECONDS:g}s: {describe_failure(exc)}")
        last_status = self._service.metrics.last_status
        reasons += [f"{job.name}: its last run failed" for job in self.jobs if last_status(job.name) == "failed"]
        return _verdict(reasons, "ready", "not ready")

    def healthy(self) -> tuple[str, dict, str]:
        now, max_age = utcnow(), self.max_age.total_seconds()
        reasons = [] if self._is_scheduling() else ["the scheduler is not running"]
        jobs = {}
        for job in self.jobs:
            last = job.last_success_at()
            since_start = last is None or last < self.started_at
            age = (now - (self.started_at if since_start else last)).total_seconds()
            jobs[job.name] = {"lastSuccessAt": last.isoformat(timespec="seconds") + "Z" if last else None,
                              "ageSeconds": round(age)}
            if age > max_age:
                since = f"none since the start {age:.0f}s ago" if since_start else f"the last one finished {age:.0f}s ago"
                reasons.append(f"{job.name}: no successful run within {max_age:.0f}s ({since})")
        return _verdict(reasons, "ok", "unhealthy", maxAgeSeconds=round(max_age), jobs=jobs)

    def _live_reasons(self) -> list[str]:
        reasons = [] if self._is_scheduling() else ["the scheduler is not running"]
        if self._watch is not None:
            reasons += [f"{job}: running for {seconds:.0f}s without progress (deadline "
                        f"{self._watch.deadline_seconds:.0f}s)" for job, seconds in self._watch.overdue().items()]
        return reasons

    def start(self) -> HealthServer:
        self._server.start()
        log.info("health and metrics listening on http://%s:%d (/livez, /readyz, /healthz, /metrics)",
                 *self.address, extra={"event": "health_listening"})
        return self

    def stop(self) -> None:
        self._server.stop()

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        route = self._routes.get(path)
        if environ.get("REQUEST_METHOD") != "GET":
            answer = "405 Method Not Allowed", {"error": "only GET"}, JSON
        elif route is None:
            answer = "404 Not Found", {"error": "not found; try /livez, /readyz, /healthz or /metrics"}, JSON
        else:
            # Each check is read from memory but the ping, which its own timeout bounds.
            try:
                answer = route()
            except Exception as exc:  # noqa: BLE001 - a failing check is a 503 that says why, never a dropped probe
                log.warning("health check %s failed: %s", path, describe_failure(exc),
                            extra={"event": "health_check_failed"})
                answer = _verdict([describe_failure(exc)], "", "unknown")
        return respond(start_response, *answer)
