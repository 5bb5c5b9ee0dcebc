"""The daemon's life: every job on an interval, first runs at start, a clean stop on SIGTERM or
SIGINT (the running job ends after its current write), an immediate one on a second signal, and
SIGHUP's stop for a restart; under systemd, READY, the watchdog and STOPPING (docs/operations.md)."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from datetime import datetime, timezone

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from services.run_records import UNSETTLED
from worker.app import Runtime
from utils.config import describe
from worker.health import (METRICS_REFRESH_SECONDS, READY, STOPPING, HealthServer, JobWatch, notify,
                           watchdog_seconds)
from worker.webhook_listener import serve_webhooks

log = logging.getLogger(__name__)

# Exit codes besides 0 (stopped cleanly), 2 (configuration error) and 128 + signal (a second one).
EXIT_RESTART = 75  # EX_TEMPFAIL: stopped cleanly on SIGHUP, to be started again (Restart=on-failure)
EXIT_FORCED = 1  # a job did not stop within the grace period: not a clean stop, whatever asked for it
SETTLE_SECONDS = 15.0  # how often run records lost in an outage are tried again


def run_daemon(app: Runtime) -> int:
    watch = JobWatch(app.settings.job_deadline_seconds)
    app.subscribe(watch.progress)
    watchdog = watchdog_seconds()  # systemd's WatchdogSec, when the unit has one
    jobs = app.scheduled_jobs()
    # One thread per job: the jobs run side by side, each at most once at a time. The heartbeat
    # has its own thread, so a busy job never delays it (only an overdue one silences it).
    scheduler = BlockingScheduler(timezone=timezone.utc, job_defaults={"max_instances": 1, "coalesce": True},
                                  executors={"default": ThreadPoolExecutor(len(jobs)),
                                             "heartbeat": ThreadPoolExecutor(1),
                                             "housekeeping": ThreadPoolExecutor(1)})
    for job in jobs:
        scheduler.add_job(watch.watched(job.name, job.run), "interval", seconds=job.seconds, id=job.name,
                          name=job.name, next_run_time=datetime.now(timezone.utc),
                          # A run that could not start on time still runs if it is late by less
                          # than half an interval; later than that, the next tick is as good.
                          misfire_grace_time=max(1, int(job.seconds / 2)))
    # A run record lost in a MongoDB outage is written once MongoDB answers, not only by the next run.
    scheduler.add_job(UNSETTLED.settle, "interval", seconds=SETTLE_SECONDS, id="settle_runs", name="settle_runs",
                      executor="housekeeping")
    if watchdog is not None:
        # A heartbeat pings it while no job is overdue, three beats a WatchdogSec: one late beat is no restart.
        scheduler.add_job(watch.heartbeat, "interval", seconds=watchdog / 3, id="watchdog", name="watchdog",
                          executor="heartbeat", next_run_time=datetime.now(timezone.utc), misfire_grace_time=None)
    grace = app.settings.shutdown_grace_seconds
    exit_code = 0
    # Called by start() once the jobs are scheduled; MongoDB answered already (prepare()).
    scheduler.add_listener(lambda _event: notify(READY, "STATUS=scheduling"), EVENT_SCHEDULER_STARTED)
    signals_received = 0

    def on_signal(signum, _frame):
        nonlocal signals_received, exit_code
        signals_received += 1
        name = signal.Signals(signum).name
        if signals_received > 1:
            # Someone will not wait for the running job: its run is marked abandoned at the next
            # start, and its cursor stays where the last whole window left it.
            log.warning("received %s again: stopping now", name, extra={"event": "shutdown_forced"})
            logging.shutdown()
            os._exit(128 + signum)
        if signum == signal.SIGHUP:
            exit_code = EXIT_RESTART
        log.info("received %s: stopping after the current write (send it again to stop now)%s", name,
                 f"; exit code {EXIT_RESTART}, to be restarted with the configuration read again"
                 if exit_code == EXIT_RESTART else "", extra={"event": "shutdown"})
        notify(STOPPING, f"STATUS=stopping on {name}")
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

    # At the end, in reverse order: STOPPING=1, the webhook listener, the health server, the app.
    with contextlib.ExitStack() as running:
        running.callback(app.close)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_signal)
        if app.settings.health_port is not None:
            running.callback(HealthServer(app, is_scheduling=lambda: scheduler.running, watch=watch).start().stop)
            scheduler.add_job(app.metrics.refresh, "interval", seconds=METRICS_REFRESH_SECONDS,
                              id="refresh_metrics", name="refresh_metrics", executor="housekeeping",
                              next_run_time=datetime.now(timezone.utc))
        if app.settings.webhook_port is not None:
            running.callback(serve_webhooks(app).stop)
        running.callback(notify, STOPPING)
        log.info("daemon started: %s%s", ", ".join(f"{job.name} every {job.seconds:g} s" for job in jobs),
                 f"; systemd watchdog every {watchdog:g} s, job deadline {app.settings.job_deadline_seconds:g} s"
                 if watchdog else "", extra={"event": "daemon_started"})
        # What it runs with, for whoever reads the log later; secrets only as set / not set.
        log.info("settings: %s", describe(app.settings), extra={"event": "settings"})
        scheduler.start()
        # Still listening while the last job finishes: /healthz answers 503 (not scheduling), which
        # tells a supervisor the stop is under way rather than a dead process.
        if not app.wait_idle(grace):
            log.error("a job did not stop within %gs; exiting anyway with code %d (its cursor was not advanced)",
                      grace, EXIT_FORCED, extra={"event": "shutdown_timeout"})
            notify(STOPPING)
            logging.shutdown()
            os._exit(EXIT_FORCED)  # the stuck job's thread would otherwise hold the interpreter open
    log.info("daemon stopped (exit code %d)", exit_code, extra={"event": "daemon_stopped"})
    return exit_code
