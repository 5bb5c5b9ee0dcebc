"""The daemon's life: every job on an interval, first runs at start, a clean stop on SIGTERM or
SIGINT (the running job ends after its current write), and an immediate one on a second signal."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime, timezone

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from typing import TYPE_CHECKING

from utils.config import describe
from worker.health import serve_health
from worker.webhook_listener import serve_webhooks

if TYPE_CHECKING:
    from worker.app import App
    from worker.fleet import Fleet

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30.0


def build_scheduler(app: "App | Fleet") -> BlockingScheduler:
    jobs = app.scheduled_jobs()
    # One thread per job: the jobs run side by side, each at most once at a time.
    scheduler = BlockingScheduler(timezone=timezone.utc,
                                  executors={"default": ThreadPoolExecutor(len(jobs))})
    for job in jobs:
        scheduler.add_job(job.run, "interval", seconds=job.seconds, id=job.name, name=job.name,
                          next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True,
                          # A run that could not start on time still runs if it is late by less
                          # than half an interval; later than that, the next tick is as good.
                          misfire_grace_time=max(1, int(job.seconds / 2)))
    return scheduler


def run_daemon(app: "App | Fleet") -> int:
    scheduler = build_scheduler(app)
    signals_received = 0

    def on_signal(signum, _frame):
        nonlocal signals_received
        signals_received += 1
        name = signal.Signals(signum).name
        if signals_received > 1:
            # Someone will not wait for the running job: its run is marked abandoned at the next
            # start, and its cursor stays where the last whole window left it.
            log.warning("received %s again: stopping now", name, extra={"event": "shutdown_forced"})
            logging.shutdown()
            os._exit(128 + signum)
        log.info("received %s: stopping after the current write (send it again to stop now)", name,
                 extra={"event": "shutdown"})
        app.stop.set()
        # From a signal handler the scheduler must not wait for its jobs (they run in other
        # threads and may need this one); the wait happens below, bounded.
        threading.Thread(target=stop_scheduling, daemon=True).start()

    def stop_scheduling():
        # A signal may arrive before scheduler.start() got going: wait for it rather than miss it.
        give_up = time.monotonic() + 10
        while not scheduler.running and time.monotonic() < give_up:
            time.sleep(0.02)
        if scheduler.running:
            scheduler.shutdown(wait=False)

    health = webhooks = None
    try:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if app.settings.health_port is not None:
            health = serve_health(app, is_scheduling=lambda: scheduler.running)
        if app.settings.webhook_port is not None:
            webhooks = serve_webhooks(app)
        log.info("daemon started: %s", ", ".join(f"{job.name} every {job.seconds:g} s" for job in app.scheduled_jobs()),
                 extra={"event": "daemon_started"})
        # What it runs with, for whoever reads the log later; secrets only as set / not set.
        log.info("settings: %s", describe(app.settings), extra={"event": "settings"})
        scheduler.start()
        # Still listening while the last job finishes: /healthz answers 503 (not scheduling), which
        # tells a supervisor the stop is under way rather than a dead process.
        if not app.wait_idle(SHUTDOWN_GRACE_SECONDS):
            log.warning("a job did not stop within %.0fs; exiting anyway (its cursor was not advanced)",
                        SHUTDOWN_GRACE_SECONDS, extra={"event": "shutdown_timeout"})
            logging.shutdown()
            os._exit(0)  # the stuck job's thread would otherwise hold the interpreter open
    finally:
        if webhooks is not None:
            webhooks.stop()
        if health is not None:
            health.stop()
        app.close()
    log.info("daemon stopped", extra={"event": "daemon_stopped"})
    return 0
