"""systemd's notify protocol and watchdog (sd_notify(3)), in the few lines the protocol takes:
each message is one datagram of `KEY=value` lines to the unix socket named by $NOTIFY_SOCKET.
Hand-written rather than a library: the protocol is this small, and the maintained bindings
(python-systemd, sdnotify) add a C build or an unmaintained package for it.

The watchdog is fed from the scheduler's own progress, never from a thread that pings whatever
happens: `JobWatch` knows which job runs and since when it last got on, and the heartbeat (a job in
the scheduler) pings only while none has run past JOB_DEADLINE_SECONDS. A hung job, or a scheduler
that no longer runs its jobs, stops the pings, and systemd (WatchdogSec) kills and restarts it."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

READY = "READY=1"
WATCHDOG = "WATCHDOG=1"
STOPPING = "STOPPING=1"


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

    def watched(self, name: str, run: Callable[[], object]) -> Callable[[], object]:
        """`run`, with its start and end noted under `name`."""
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


class Heartbeat:
    """The scheduler's heartbeat job: WATCHDOG=1 while no job is overdue."""

    def __init__(self, watch: JobWatch, send: Callable[..., bool] = notify):
        self._watch = watch
        self._send = send
        self._stalled = False

    def beat(self) -> None:
        overdue = self._watch.overdue()
        if overdue:
            if not self._stalled:  # said once, not at every beat
                log.error("watchdog: %s past the deadline of %.0fs without progress; no longer telling "
                          "systemd all is well", ", ".join(f"{name} ({seconds:.0f}s)" for name, seconds in overdue.items()),
                          self._watch.deadline_seconds, extra={"event": "watchdog_stalled"})
            self._stalled = True
            return
        if self._stalled:
            log.info("watchdog: the jobs got on again", extra={"event": "watchdog_resumed"})
            self._stalled = False
        self._send(WATCHDOG)
