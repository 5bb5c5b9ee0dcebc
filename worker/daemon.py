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

from utils.config import describe
from worker.app import App
from worker.health import serve_health
from worker.jobs import JOB_NAMES
from worker.webhook_listener import serve_webhooks

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30.0


def build_scheduler(app: App) -> BlockingScheduler:
    interval = app.settings.sync_interval_minutes
    # One thread per job: the jobs run side by side, each at most once at a time.
    scheduler = BlockingScheduler(timezone=timezone.utc,
                                  executors={"default": ThreadPoolExecutor(len(JOB_NAMES))})
    for name in JOB_NAMES:
        scheduler.add_job(app.run_job, "interval", minutes=interval, args=[name], id=name, name=name,
                          next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True,
                          # A run that could not start on time still runs if it is late by less
                          # than half an interval; later than that, the next tick is as good.
                          misfire_grace_time=max(1, interval * 30))
    return scheduler


def run_daemon(app: App) -> int:
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
        log.info("daemon started: jobs %s every %d min", ", ".join(JOB_NAMES), app.settings.sync_interval_minutes,
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
