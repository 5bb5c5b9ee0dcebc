"""The optional HTTP listener (HEALTH_PORT): `/healthz` for supervisors and container runtimes,
`/metrics` for Prometheus. It runs in a daemon thread and never touches the jobs."""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from utils.clock import utcnow

if TYPE_CHECKING:
    from worker.app import App
    from worker.fleet import Fleet

log = logging.getLogger(__name__)


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


class HealthServer:
    def __init__(self, check: HealthCheck, registry: CollectorRegistry, host: str, port: int):
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True  # a stuck client must not hold the process open at exit
        self._server.check = check
        self._server.registry = registry
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="health",
                                        daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the port is chosen by the system when 0 was asked)."""
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> HealthServer:
        self._thread.start()
        host, port = self.address
        log.info("health and metrics listening on http://%s:%d (/healthz, /metrics)", host, port,
                 extra={"event": "health_listening"})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_health(service: "App | Fleet", is_scheduling: Callable[[], bool],
                 started_at: datetime | None = None) -> HealthServer:
    """Start the listener on HEALTH_HOST:HEALTH_PORT, with `service`'s metrics and the last
    successes of its scheduled jobs. `started_at`: when the daemon started (default: now)."""
    settings = service.settings
    max_age = timedelta(minutes=settings.sync_interval_minutes) * settings.health_max_age_intervals
    jobs = [job.name for job in service.scheduled_jobs()]
    check = HealthCheck(jobs, max_age, is_scheduling=is_scheduling, last_success=service.last_success_at,
                        started_at=started_at)
    return HealthServer(check, service.metrics.registry, settings.health_host, settings.health_port).start()


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            healthy, body = self.server.check.evaluate()
            self._send(200 if healthy else 503, json.dumps(body).encode(), "application/json")
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b'{"error": "not found; try /healthz or /metrics"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        # A probe every few seconds would drown the job logs; keep access lines for debugging.
        log.debug("health request: " + format, *args)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None
