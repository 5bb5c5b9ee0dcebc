"""Leases: a document taken by one worker until a time, in every collection that has them
(analysis claims on `calls`, `webhook_inbox`, `tenant_schedule`), under the names APScheduler 4's
MongoDB data store gives them:

    acquired_by      who holds it (host:pid:random), shown in status
    acquired_until   when the lease ends, by the holder's `clock`: the database server's where
                     replicas share the documents (`ServerClock`), so a replica whose clock is fast
                     cannot take a live lease
    acquired_token   this acquisition's own token, named in the filter of every later write of the
                     holder: a holder whose lease expired and was taken over writes nothing

A live holder finishes, renews or releases well within its lease; a lease past `acquired_until`
belongs to a worker that died, and the document may be taken again.
"""
from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta
from typing import Callable

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from utils.clock import to_millis, utcnow

log = logging.getLogger(__name__)

BY, UNTIL, TOKEN = "acquired_by", "acquired_until", "acquired_token"
# The `$unset` that ends a lease.
RELEASED = {BY: "", UNTIL: "", TOKEN: ""}
# Clocks drift by milliseconds a day: measuring the offset once an hour is plenty.
REMEASURE_AFTER = timedelta(hours=1)


def new_token() -> str:
    return uuid.uuid4().hex


def free(now: datetime) -> dict:
    """The filter of documents no live lease holds (never taken, released, or expired)."""
    return {"$or": [{UNTIL: None}, {UNTIL: {"$lte": now}}]}


def taken(owner: str, token: str, until: datetime) -> dict:
    return {BY: owner, UNTIL: until, TOKEN: token}


def migrate(collection: Collection, old: str, old_until: str, within: dict, hint=None) -> None:
    """Leases stored in an earlier shape (`{<old>: {owner, token, <old_until>, ...}}`) rewritten in
    these names, in one update; idempotent (none is left after it). `within`: where such leases can
    be (the documents waiting to be taken), with the `hint` of its index, so start-up walks no more."""
    collection.update_many({**within, old: {"$exists": True}}, [
        {"$set": {BY: f"${old}.owner", UNTIL: f"${old}.{old_until}", TOKEN: f"${old}.token"}},
        {"$unset": old}], hint=hint)


class ServerClock:
    """Time by the database server's clock, for what replicas compare with each other (leases):
    each replica's own clock may be minutes off, the server's is one for all of them."""

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
