"""An account's lease held while its jobs run, and the work fenced off when it may have run out.

The schedule's lease is what keeps two replicas from syncing one account at once; it holds only
while the holder renews it. So the holder renews every third of the lease and, beside that,
watches the lease's end on the database server's clock: when a renewal is refused (another
replica took the account) or has not been confirmed a margin before the end (a slow or
unreachable server, a stalled process), it sets the account's stop. The account's jobs then end
after their current write, as on SIGTERM, before another replica can claim the account.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from services.tenancy.schedule import TenantClaim, TenantSchedule

log = logging.getLogger(__name__)

MIN_MARGIN = timedelta(seconds=2)


class LeaseKeeper:
    def __init__(self, schedule: TenantSchedule, claim: TenantClaim, process_stop: threading.Event):
        self._schedule = schedule
        self._claim = claim
        self._process_stop = process_stop
        # The account's stop, given to its jobs: set on the process's stop or when the lease may be gone.
        self.stop = threading.Event()
        self.lost = False
        self._valid_until = claim.acquired_until  # server time, as the schedule compares it
        self._margin = max(MIN_MARGIN, schedule.lease / 10)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._renew, name="lease-renew", daemon=True),
                         threading.Thread(target=self._watch, name="lease-watch", daemon=True)]

    def __enter__(self) -> "LeaseKeeper":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()

    def _renew(self) -> None:
        every = self._schedule.lease.total_seconds() / 3
        while not self._done.wait(every):
            asked = self._schedule.clock()  # the new end is at least a lease from here
            try:
                renewed = self._schedule.renew(self._claim)
            except Exception:  # noqa: BLE001 - MongoDB away for a moment: the watch fences if it lasts
                log.warning("could not renew an account's lease", exc_info=True, extra={"event": "lease_renew_failed"})
                continue
            if not renewed:
                self._fence("another replica holds it now")
                return
            with self._lock:
                self._valid_until = max(self._valid_until, asked + self._schedule.lease)

    def _watch(self) -> None:
        tick = min(1.0, self._schedule.lease.total_seconds() / 10)
        while not self._done.wait(tick):
            if self._process_stop.is_set():
                self.stop.set()
            with self._lock:
                deadline = self._valid_until - self._margin
            if self._schedule.clock() >= deadline:
                self._fence("no renewal was confirmed in time")
                return

    def _fence(self, why: str) -> None:
        self.lost = True
        self.stop.set()
        log.warning("account %s: its lease may be gone (%s); its sync stops after the current write",
                    self._claim.tenant_id, why, extra={"event": "tenant_lease_lost"})
