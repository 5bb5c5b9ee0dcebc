"""The optional HTTP listener (HEALTH_PORT), following Kubernetes' probe names: `/livez` (the
process and its scheduler are alive), `/readyz` (MongoDB answers and the last runs are not failing),
`/healthz` (the jobs succeed often enough; kept as it always was) and `/metrics` for Prometheus.

It is bounded whatever its clients do: one asyncio loop serves every connection in one thread, a
client has READ_TIMEOUT_SECONDS to send its request head (at most MAX_HEAD_BYTES), at most
MAX_CONNECTIONS are open, and the checks run in a pool of CHECK_THREADS. Idle or slow clients
cost a socket each, never a thread. A scrape never queries MongoDB (worker/metrics.py)."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable

import pymongo
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.run_records import describe_failure
from utils.clock import utcnow

if TYPE_CHECKING:
    from worker.app import Runtime
    from worker.metrics import RunMetrics
    from worker.systemd import JobWatch

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 5.0
MAX_HEAD_BYTES = 8192
MAX_CONNECTIONS = 4096
CHECK_THREADS = 2
# /readyz: MongoDB must answer a ping within this; a probe's own timeout should be longer.
PING_TIMEOUT_SECONDS = 2.0
# A check (a ping, the first read of the last successes) that takes longer is answered 503.
CHECK_TIMEOUT_SECONDS = 5.0
# Values /metrics shows that are read from MongoDB are read again this often (and after each run).
METRICS_REFRESH_SECONDS = 15.0

JSON = "application/json"


class HealthCheck:
    """Healthy while the scheduler is running and every job's last successful run (ok or partial)
    is younger than `max_age`. A job that has not succeeded since the daemon started is measured
    from the start: a fresh install, or a daemon restarted after downtime, is healthy for
    `max_age` while its first runs catch up."""

    def __init__(self, jobs: Iterable[str], max_age: timedelta, *, is_scheduling: Callable[[], bool],
                 last_success: Callable[[str], datetime | None], started_at: datetime | None = None):
        self.jobs = tuple(jobs)
        self.max_age = max_age
        self.started_at = started_at or utcnow()
        self._is_scheduling = is_scheduling
        self._last_success = last_success

    def evaluate(self) -> tuple[bool, dict]:
        """(healthy, the JSON body saying why)."""
        now = utcnow()
        reasons = []
        if not self._is_scheduling():
            reasons.append("the scheduler is not running")
        jobs = {}
        for job in self.jobs:
            last = self._last_success(job)
            since_start = last is None or last < self.started_at
            age = (now - (self.started_at if since_start else last)).total_seconds()
            jobs[job] = {"lastSuccessAt": _iso(last), "ageSeconds": round(age)}
            if age > self.max_age.total_seconds():
                since = f"none since the start {age:.0f}s ago" if since_start else f"the last one finished {age:.0f}s ago"
                reasons.append(f"{job}: no successful run within {self.max_age.total_seconds():.0f}s ({since})")
        body = {"status": "unhealthy" if reasons else "ok", "reasons": reasons,
                "maxAgeSeconds": round(self.max_age.total_seconds()), "jobs": jobs}
        return not reasons, body


class Probes:
    """/livez and /readyz. Live: the scheduler runs and no job is past its deadline (the systemd
    watchdog's own rule). Ready: live, MongoDB answers a ping within PING_TIMEOUT_SECONDS, and the
    last run of no scheduled job failed."""

    def __init__(self, *, is_scheduling: Callable[[], bool], ping: Callable[[], object],
                 last_status: Callable[[str], str | None], jobs: Iterable[str], watch: "JobWatch | None" = None):
        self._is_scheduling = is_scheduling
        self._ping = ping
        self._last_status = last_status
        self._jobs = tuple(jobs)
        self._watch = watch

    def live(self) -> tuple[bool, dict]:
        reasons = [] if self._is_scheduling() else ["the scheduler is not running"]
        if self._watch is not None:
            reasons += [f"{job}: running for {seconds:.0f}s without progress (deadline "
                        f"{self._watch.deadline_seconds:.0f}s)" for job, seconds in self._watch.overdue().items()]
        return _verdict(reasons, "ok", "not live")

    def ready(self) -> tuple[bool, dict]:
        _live, body = self.live()
        reasons = list(body["reasons"])
        try:
            with pymongo.timeout(PING_TIMEOUT_SECONDS):
                self._ping()
        except Exception as exc:  # noqa: BLE001 - any failure to answer is "not ready", said in the body
            reasons.append(f"MongoDB did not answer a ping within {PING_TIMEOUT_SECONDS:g}s: {describe_failure(exc)}")
        reasons += [f"{job}: its last run failed" for job in self._jobs if self._last_status(job) == "failed"]
        return _verdict(reasons, "ready", "not ready")


def _verdict(reasons: list[str], good: str, bad: str) -> tuple[bool, dict]:
    return not reasons, {"status": bad if reasons else good, "reasons": reasons}


class HealthServer:
    """The listener: an asyncio loop in one thread, the checks in a pool of CHECK_THREADS, and a
    thread that refreshes the metrics read from MongoDB."""

    def __init__(self, check: HealthCheck, probes: Probes, metrics: "RunMetrics", host: str, port: int, *,
                 read_timeout: float = READ_TIMEOUT_SECONDS, max_connections: int = MAX_CONNECTIONS):
        self._routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/livez": lambda: _json(*probes.live()),
            "/readyz": lambda: _json(*probes.ready()),
            "/healthz": lambda: _json(*check.evaluate()),
            "/metrics": lambda: (200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST),
        }
        self._metrics = metrics
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._connections = 0
        self._checks = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="health-check")
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES, backlog=1024))
        self._thread = threading.Thread(target=self._loop.run_forever, name="health", daemon=True)
        self._stopping = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_metrics, name="metrics-refresh", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the port is chosen by the system when 0 was asked)."""
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def start(self) -> HealthServer:
        self._thread.start()
        self._refresher.start()
        host, port = self.address
        log.info("health and metrics listening on http://%s:%d (/livez, /readyz, /healthz, /metrics)", host, port,
                 extra={"event": "health_listening"})
        return self

    def stop(self) -> None:
        self._stopping.set()

        async def close():
            self._server.close()
            # Open connections are each within a read or a write bounded by the read timeout.
            await asyncio.wait_for(self._server.wait_closed(), self._read_timeout + 1)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(self._read_timeout + 2)
        except Exception:  # noqa: BLE001 - stopping anyway; the loop's thread is a daemon
            log.debug("health server: connections still open at stop", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._refresher.join(5)
        self._checks.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()

    def _refresh_metrics(self) -> None:
        while True:
            self._metrics.refresh()
            if self._stopping.wait(METRICS_REFRESH_SECONDS):
                return

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1  # only this loop's thread touches it
        try:
            if self._connections > self._max_connections:
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._read_timeout)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # slow, idle, oversized or gone: dropped without an answer
            status, body, content_type = await self._answer(head)
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % (status, _REASONS[status], content_type.encode(), len(body)) + body)
            await asyncio.wait_for(writer.drain(), self._read_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self._connections -= 1
            writer.close()

    async def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
        if method != b"GET":
            return 405, b'{"error": "only GET"}', JSON
        route = self._routes.get(path)
        if route is None:
            return 404, b'{"error": "not found; try /livez, /readyz, /healthz or /metrics"}', JSON
        try:
            return await asyncio.wait_for(self._loop.run_in_executor(self._checks, route), CHECK_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            return 503, json.dumps({"status": "unknown", "reasons": [
                f"the check did not finish within {CHECK_TIMEOUT_SECONDS:g}s"]}).encode(), JSON
        except Exception as exc:  # noqa: BLE001 - a failing check is a 503 that says why, never a dropped probe
            log.warning("health check %s failed: %s", path, describe_failure(exc), extra={"event": "health_check_failed"})
            return 503, json.dumps({"status": "unknown", "reasons": [describe_failure(exc)]}).encode(), JSON


_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 503: b"Service Unavailable"}


def _json(healthy: bool, body: dict) -> tuple[int, bytes, str]:
    return 200 if healthy else 503, json.dumps(body).encode(), JSON


def serve_health(service: "Runtime", is_scheduling: Callable[[], bool], started_at: datetime | None = None,
                 watch: "JobWatch | None" = None, **limits) -> HealthServer:
    """Start the listener on HEALTH_HOST:HEALTH_PORT, with `service`'s metrics and the last
    successes of its scheduled jobs. `started_at`: when the daemon started (default: now);
    `watch`: the jobs' deadlines (the daemon's), for /livez; `limits`: HealthServer's bounds."""
    settings = service.settings
    max_age = timedelta(minutes=settings.sync_interval_minutes) * settings.health_max_age_intervals
    jobs = [job.name for job in service.scheduled_jobs()]
    check = HealthCheck(jobs, max_age, is_scheduling=is_scheduling, last_success=service.last_success_at,
                        started_at=started_at)
    probes = Probes(is_scheduling=is_scheduling, ping=lambda: service.db.command("ping"),
                    last_status=service.metrics.last_status, jobs=jobs, watch=watch)
    return HealthServer(check, probes, service.metrics, settings.health_host, settings.health_port, **limits).start()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None
