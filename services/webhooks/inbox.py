"""The webhook inbox: every accepted delivery is stored here before it is answered, so a crash
between accepting and processing loses nothing.

One entry per call id and status (Bolna's own deduplication key): a repeated delivery is a
duplicate and stores nothing. The processor claims waiting entries under leases (services/lease.py):
a processor that died leaves them to another. The raw body
is kept only until the entry is processed (it holds a transcript and phone numbers); entries
expire after WEBHOOK_INBOX_DAYS.

With many accounts, a delivery is accepted through its account's view of the database, so the
entry carries the account's `userId`; a replica's one processor claims the waiting entries of all
accounts (through the database itself) and writes each through its own account's view.

Fair to every account: an account holds at most `max_waiting` waiting entries (WEBHOOK_MAX_WAITING;
beyond it a delivery is refused with InboxFull, answered 429 for Bolna to retry later), and each
entry is stamped with its `rank`, how many of its account's entries were waiting when it came.
Claims take the lowest ranks first, so the accounts are served round-robin: the first waiting
delivery of every account, then the second, ... and one account's flood delays another's delivery
by at most the batch in hand.

The cap is checked by counting, then the entry is inserted: two requests of one account checked at
once may both pass. Each listener thread holds one delivery at a time, so an account holds at most
`max_waiting` + (listener threads x replicas) - 1 entries, whatever the burst. (A counter kept
beside the entries would close that gap but must be remembered and mended after a crash; the
count is recomputed from the entries themselves, and bounded by `max_waiting` keys.)"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from bson import Binary
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from services import lease
from services.database import INBOX_CLAIM_KEYS, INBOX_STATE_KEYS
from utils.clock import utcnow

WAITING, DONE, FAILED = "waiting", "done", "failed"
# Deliveries whose processing was cut off this many times (a processor dying on them) are failed:
# the poll still reconciles the call.
MAX_ATTEMPTS = 5


class InboxFull(Exception):
    """The account already has its `max_waiting` deliveries waiting: answered 429, retried by Bolna."""


@dataclass(frozen=True)
class Delivery:
    """A claimed inbox entry."""
    entry_id: object
    call_id: str
    body: bytes
    received_at: datetime
    attempts: int
    user_id: object = None  # the account it was delivered for (None: the single account)


@dataclass(frozen=True)
class Processed:
    """What the processor reports of one delivery: `lag_ms` from Bolna's `updated_at` to the write."""
    entry_id: object
    lag_ms: int | None = None
    error: str | None = None  # set: the delivery failed


def waiting_entry(call_id: str, status: str, bolna_updated_at: datetime | None, body: bytes, rank: int) -> dict:
    """An accepted delivery as stored; `rank`: how many of its account's deliveries were waiting."""
    return {"callId": call_id, "status": status, "bolnaUpdatedAt": bolna_updated_at, "receivedAt": utcnow(),
            "state": WAITING, "rank": rank, "attempts": 0, "body": Binary(body)}


class Inbox:
    def __init__(self, entries: Collection, owner: str, lease_seconds: float,
                 clock: Callable[[], datetime] = utcnow, *, max_waiting: int = 5000):
        """`max_waiting`: the waiting entries one account may hold (accepting through its view)."""
        self.entries = entries
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock
        self.max_waiting = max_waiting

    def accept(self, call_id: str, status: str, bolna_updated_at: datetime | None, body: bytes) -> bool:
        """Store one delivery; False when this call's status was delivered before (a duplicate).
        Raises InboxFull when the account has `max_waiting` deliveries waiting."""
        # No hint: the filter is exactly `userId_state`'s keys (the account's view adds `userId`),
        # which every planner picks; the test run's wire server walks a hinted index whole.
        waiting = self.entries.count_documents({"state": WAITING}, limit=self.max_waiting)
        if waiting >= self.max_waiting:
            raise InboxFull(f"{self.max_waiting} deliveries of this account are waiting")
        try:
            self.entries.insert_one(waiting_entry(call_id, status, bolna_updated_at, body, waiting))
        except DuplicateKeyError:
            return False
        return True

    def claim(self, limit: int) -> tuple[str, list[Delivery]]:
        """Up to `limit` waiting deliveries no live claim holds, lowest rank first (round-robin
        across accounts), then oldest, under one new token: three round trips whatever the number.
        Each entry is claimed atomically, so one another processor took in between is simply not
        among those returned."""
        token, now = lease.new_token(), self.clock()
        claimable = {"state": WAITING, **lease.free(now)}
        ids = [doc["_id"] for doc in self.entries.find(claimable, {"_id": 1},
                                                        sort=[("rank", ASCENDING), ("receivedAt", ASCENDING)],
                                                        hint=INBOX_CLAIM_KEYS, limit=limit)]
        if not ids:
            return token, []
        self.entries.update_many({"_id": {"$in": ids}, **claimable}, {
            "$set": lease.taken(self.owner, token, now + self.lease), "$inc": {"attempts": 1}})
        held = self.entries.find({"_id": {"$in": ids}, lease.TOKEN: token},
                                 {"callId": 1, "body": 1, "receivedAt": 1, "attempts": 1, "userId": 1})
        deliveries = [Delivery(doc["_id"], doc["callId"], bytes(doc.get("body") or b""), doc["receivedAt"],
                               doc["attempts"], doc.get("userId")) for doc in held]
        return token, sorted(deliveries, key=lambda delivery: delivery.received_at)

    def finish(self, token: str, outcomes: list[Processed]) -> int:
        """Close the claimed entries, in one round trip; only the holder of the claim can. Returns
        how many were closed (fewer when a lease expired and another processor took them)."""
        now = utcnow()
        operations = [UpdateOne(
            {"_id": outcome.entry_id, lease.TOKEN: token},
            {"$set": {"state": FAILED if outcome.error else DONE, "processedAt": now, "lagMs": outcome.lag_ms,
                      **({"error": outcome.error} if outcome.error else {})},
             "$unset": {**lease.RELEASED, "body": ""}}) for outcome in outcomes]
        if not operations:
            return 0
        return self.entries.bulk_write(operations, ordered=False).modified_count

    def release(self, token: str, entry_ids: list) -> None:
        """Back to waiting at once (a write the database refused for a reason that may pass)."""
        self.entries.update_many({"_id": {"$in": entry_ids}, lease.TOKEN: token}, {"$unset": lease.RELEASED})

    def waiting(self) -> int:
        return self.entries.count_documents({"state": WAITING}, hint=INBOX_STATE_KEYS)

    def lags_since(self, since: datetime) -> list[int]:
        """Lags (ms) of the deliveries processed since `since`, ascending."""
        docs = self.entries.find({"state": DONE, "receivedAt": {"$gte": since}, "lagMs": {"$ne": None}},
                                 {"lagMs": 1, "_id": 0}, hint=INBOX_STATE_KEYS)
        return sorted(doc["lagMs"] for doc in docs)
