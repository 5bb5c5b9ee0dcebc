"""Prometheus metrics of the daemon, taken from the run records it writes.

Counters grow by each finished run's counts (a `RunRecords` listener), so they say exactly what
the stored run records say. What only MongoDB knows (the analysis queue depth, the accounts by
state) is read after each run and every few seconds by the health server, under a timeout, and a
scrape shows the last value read: a scrape never waits for MongoDB. The last-success times are
loaded from `sync_runs` at start so a restart does not forget them.
"""
from __future__ import annotations

import logging
import os
import platform
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import pymongo
from prometheus_client import (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter,
                               Gauge, Histogram, Info)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo.errors import PyMongoError

from services.analyzer.outcomes import OUTCOME_COUNTERS
from services.database import SYNC_STATE
from services.request_outcomes import OUTCOMES as REQUEST_OUTCOMES, RequestOutcomes
from services.run_records import SUCCESSFUL, RunRecords
from services.sync_state import oldest_cursor
from services.webhooks import OUTCOMES, DeliveryTally
from utils.clock import unix_seconds

if TYPE_CHECKING:
    from pymongo.database import Database

    from services.analyzer.groq_analyzer import GroqAnalyzer

log = logging.getLogger(__name__)

RUN_STATUSES = ("ok", "partial", "failed")
WRITE_COUNTS = ("inserted", "updated")
TOKEN_KINDS = {"prompt": "promptTokens", "completion": "completionTokens"}
# Seconds from Bolna's `updated_at` to the call's write: Bolna's own delay is part of it.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# A run lasts from seconds (nothing new) to many minutes (a first sync, a backlog of analyses).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# A read for a refreshed gauge that takes longer is given up; the gauge keeps its last value.
REFRESH_TIMEOUT_SECONDS = 2.0


class RunMetrics:
    def __init__(self, jobs: Iterable[str], *, queue_depth: Callable[[], int] | None, llm_configured: bool = False,
                 refresh_after_runs: bool = True):
        """`queue_depth`: how many calls wait for analysis, read after each run and by the
        refresher; None with many accounts (each account's queue is its own, and a count across
        them would scan). `refresh_after_runs`: read the refreshed gauges again after each run (one
        account); with many accounts only the listener's refresher reads them, every few seconds,
        not once per account's run."""
        self._refresh_after_runs = refresh_after_runs
        self.jobs = tuple(jobs)
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._last_success: dict[str, datetime] = {}
        self._last_status: dict[str, str] = {}
        self._refreshed: list[_Refreshed] = []
        registry = self.registry
        self.runs = Counter("callsync_runs", "Job runs finished, by job and status",
                            ["job", "status"], registry=registry)
        self.records_written = Counter(
            "callsync_records_written",
            "Documents written by the jobs (crm_sync: customers, call_processor: calls), by operation",
            ["job", "operation"], registry=registry)
        self.run_errors = Counter("callsync_run_errors", "Errors recorded on job runs", ["job"],
                                  registry=registry)
        self.analyses = Counter("callsync_llm_calls", "Calls taken from the analysis queue, by outcome",
                                ["outcome"], registry=registry)
        self.fallbacks = Counter("callsync_llm_fallbacks",
                                 "Analyses made by the offline heuristic instead of the LLM", registry=registry)
        self.tokens = Counter("callsync_llm_tokens", "LLM tokens used, by kind", ["kind"], registry=registry)
        self.cost = Counter("callsync_llm_cost_usd",
                            "Estimated LLM cost in US dollars, from the price table (LLM_PRICES)",
                            registry=registry)
        self.fallback_ratio = Gauge(
            "callsync_llm_fallback_ratio",
            "Share of analyses made by the offline heuristic, in the last run that analyzed any call",
            registry=registry)
        self.last_success = Gauge("callsync_last_success_timestamp_seconds",
                                  "When the last ok or partial run of each job finished (Unix time)",
                                  ["job"], registry=registry)
        self.budget_spent = Counter("callsync_llm_budget_exhausted",
                                    "Runs whose LLM request budget (LLM_REQUEST_BUDGET) ran out, leaving calls queued",
                                    registry=registry)
        # 1 when a Groq key is set (with many accounts: the daemon's own): without one every
        # analysis is the heuristic's by design, and the fallback ratio is no alarm.
        Gauge("callsync_llm_configured", "1 when a Groq API key is configured", registry=registry).set(
            int(llm_configured))
        self.duration = Histogram("callsync_run_duration_seconds", "How long each finished run took, by job",
                                  ["job"], buckets=DURATION_BUCKETS, registry=registry)
        self.bolna_requests = Counter("callsync_bolna_requests", "Requests to Bolna's API, by outcome "
                                      "(ok, retried, 429, error)", ["outcome"], registry=registry)
        self.llm_requests = Counter("callsync_llm_requests", "Requests to Groq's chat completions, by outcome "
                                    "(ok, retried, 429, error)", ["outcome"], registry=registry)
        Info("callsync_build", "The running build", registry=registry).info(
            # Set by the image build (Dockerfile's CALLSYNC_VERSION).
            {"version": os.environ.get("CALLSYNC_VERSION") or "dev", "python": platform.python_version()})
        # The process's CPU, memory, file descriptors and start time; the interpreter's GC.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        if queue_depth is not None:
            self.refreshed("callsync_analysis_queue_depth", "Calls stored final and not analyzed yet", queue_depth)
        # Every series exists from the start, so a rate over the first failure is not lost.
        for job in self.jobs:
            for status in RUN_STATUSES:
                self.runs.labels(job, status)
            for operation in WRITE_COUNTS:
                self.records_written.labels(job, operation)
            self.run_errors.labels(job)
        for outcome in OUTCOME_COUNTERS:
            self.analyses.labels(outcome)
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)
        for outcome in REQUEST_OUTCOMES:
            self.bolna_requests.labels(outcome)
            self.llm_requests.labels(outcome)

    def refreshed(self, name: str, help: str, read: Callable[[], object], label: str | None = None) -> None:
        """A gauge of what `read` returns from MongoDB, read by `refresh` (never at scrape)."""
        gauge = _Refreshed(name, help, read, label)
        self.registry.register(gauge)
        self._refreshed.append(gauge)

    def refresh(self) -> None:
        """Read the refreshed gauges again, each within REFRESH_TIMEOUT_SECONDS."""
        for gauge in self._refreshed:
            gauge.refresh()

    def observe_requests(self, bolna: RequestOutcomes, llm: "GroqAnalyzer | None") -> None:
        """Count the outcome of each request to Bolna (`bolna`: its client's outcomes) and to Groq."""
        bolna.subscribe(lambda outcome: self.bolna_requests.labels(outcome).inc())
        if llm is not None:
            llm.outcomes.subscribe(lambda outcome: self.llm_requests.labels(outcome).inc())

    def observe_cursors(self, db: "Database") -> None:
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
        """The status of the last run of `job` this process finished (None before the first)."""
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
        if run["status"] in SUCCESSFUL and run.get("finishedAt"):
            self._set_last_success(job, run["finishedAt"])
        if run.get("finishedAt") and run.get("startedAt"):
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
    registry = metrics.registry
    metrics.refreshed("callsync_webhook_inbox_waiting", "Webhook deliveries stored and not written yet", waiting)
    deliveries = Counter("callsync_webhook_deliveries", "Webhook deliveries, by outcome", ["outcome"],
                         registry=registry)
    lag = Histogram("callsync_webhook_lag_seconds",
                    "Seconds from Bolna's updated_at of a delivered call to its write", buckets=LAG_BUCKETS,
                    registry=registry)
    for outcome in OUTCOMES:
        deliveries.labels(outcome)
    tally.subscribe(lambda outcome, n: deliveries.labels(outcome).inc(n), lag.observe)


def observe_accounts(metrics: RunMetrics, counts: Callable[[], dict[str, int]]) -> None:
    """Accounts by schedule state (running, due, waiting, refused, retired), read by the refresh."""
    metrics.refreshed("callsync_accounts", "Accounts in the schedule, by state (TENANT_SOURCE=mongodb)", counts,
                      label="state")


class _Refreshed(Collector):
    """A gauge of a value read from MongoDB: what it counts also changes by other daemons' work
    (another replica, `reanalyze`), so it is read again, by `refresh`. A scrape shows the last value
    read (no series before the first read succeeded). `label`: the read returns a number per value of it."""

    def __init__(self, name: str, help: str, read: Callable[[], object], label: str | None = None):
        self._name, self._help, self._read = name, help, read
        self._labels = [label] if label else []
        self._value: object = None

    def refresh(self) -> None:
        try:
            with pymongo.timeout(REFRESH_TIMEOUT_SECONDS):
                self._value = self._read()
        except PyMongoError as exc:
            # The last value stays; the scrape answers at once with it and every other metric.
            log.warning("%s not refreshed: %s", self._name, type(exc).__name__, extra={"event": "metrics_degraded"})

    def _family(self, **value) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name, self._help, labels=self._labels or None, **value)

    def describe(self) -> list[GaugeMetricFamily]:
        # Without describe() the registry would run a query at registration to learn the name.
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._value
        if value is None:
            return
        if not self._labels:
            yield self._family(value=value)
            return
        family = self._family()
        for label_value, number in value.items():
            family.add_metric([label_value], number)
        yield family
