"""Time by the database server's clock, for what replicas compare with each other (claim leases):
each replica's own clock may be minutes off, the server's is one for all of them."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Callable

from pymongo.database import Database
from pymongo.errors import PyMongoError

from utils.clock import to_millis, utcnow

log = logging.getLogger(__name__)

# Clocks drift by milliseconds a day: measuring the offset once an hour is plenty.
REMEASURE_AFTER = timedelta(hours=1)


class ServerClock:
    def __init__(self, db: Database, local: Callable[[], datetime] = utcnow):
        self._db = db
        self._local = local
        self._offset = timedelta(0)
        self._measured_at: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        local = self._local()
        with self._lock:
            if self._measured_at is None or local - self._measured_at > REMEASURE_AFTER:
                self._measured_at = local
                try:
                    before = self._local()
                    server_time = self._db.command("hello")["localTime"]
                    after = self._local()
                except (PyMongoError, KeyError) as exc:
                    log.debug("server time unavailable (%s); the last offset stays in use", type(exc).__name__)
                else:
                    self._offset = server_time - (before + (after - before) / 2)  # half the round trip
                    if abs(self._offset) > timedelta(seconds=5):
                        log.warning("this machine's clock is %.0f s off the database server's; leases use the "
                                    "server's", -self._offset.total_seconds(), extra={"event": "clock_skew"})
            return to_millis(local + self._offset)
