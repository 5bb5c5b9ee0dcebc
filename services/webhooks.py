"""Bolna webhooks once accepted: the inbox a delivery is stored in before it is answered, its
processor, and the tally of deliveries by outcome.

The inbox: every accepted delivery is stored before it is answered, so a crash between accepting
and processing loses nothing. One entry per call id and status (Bolna's own deduplication key): a
repeated delivery is a duplicate and stores nothing. The processor claims waiting entries under
leases (services/lease.py): a processor that died leaves them to another. The raw body is kept
only until the entry is processed (it holds a transcript and phone numbers); entries expire after
WEBHOOK_INBOX_DAYS.

With many accounts, a delivery is accepted through its account's view of the database, so the
entry carries the account's `userId`; a replica's one processor claims the waiting entries of all
accounts (through the database itself), splits a batch by account and writes each part through
that account's writers (its view of the database, its phone region).

Fair to every account: an account holds at most `max_waiting` waiting entries (WEBHOOK_MAX_WAITING;
beyond it a delivery is refused with InboxFull, answered 429 for Bolna to retry later), and each
entry is stamped with its `rank`, how many of its account's entries were waiting when it came.
Claims take the lowest ranks first, so the accounts are served round-robin: the first waiting
delivery of every account, then the second, ... and one account's flood delays another's delivery
by at most the batch in hand.

The cap is not counted on every delivery: a count reads every waiting entry up to the cap (index
keys on MongoDB, whole documents on the test run's wire server), which under a burst is what
accepting costs. A process counts an account's waiting entries again after COUNT_EVERY accepts,
once its count is COUNT_AGE_SECONDS old, and before any refusal; in between it adds to the count,
under a lock, the deliveries it accepted since. So one process never takes an account past
`max_waiting` (a delivery being inserted while a count is taken may be counted twice: a refusal
too many until the next count, never an entry too many), and each other replica may have
accepted, unseen since that count, at most COUNT_EVERY: an account holds at most `max_waiting` +
(replicas - 1) x COUNT_EVERY entries, whatever the burst. Nothing is remembered that the entries
do not give again: after a crash the next delivery is counted afresh. (A counter document beside
the entries would be a second write, to mend after a crash between the two.)

The processor: a thread of the daemon that claims accepted deliveries and writes them through the
poll's own writers (calls, then customers), so the analysis queue, the CRM rules, the order-safe
call write and the suppression list apply to webhooks exactly as to the poll. Woken when the
listener accepts a delivery, and every POLL_SECONDS anyway (a delivery another replica accepted, or
one a dead processor left claimed until its lease expired).

The tally: deliveries counted by outcome, in memory for /metrics as they happen, and added to
`webhook_deliveries` (one document per UTC hour) every few seconds, so `main.py status` shows the
figures of every replica, rejections included, from any machine."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Callable, Iterable

from bson import Binary
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from models.execution import Execution, MalformedExecution, parse_execution
from services import lease
from services.database import INBOX_CLAIM_KEYS, INBOX_STATE_KEYS, INBOX_WAITING
from services.execution_feed import PAGE_REFUSALS
from services.run_records import RunRecorder, describe_failure
from services.writers import CallWriter, CustomerWriter
from utils.clock import utcnow

log = logging.getLogger(__name__)

WAITING, DONE, FAILED = INBOX_WAITING, "done", "failed"
# Deliveries whose processing was cut off this many times (a processor dying on them) are failed:
# the poll still reconciles the call.
MAX_ATTEMPTS = 5
POLL_SECONDS = 0.25
LEASE_SECONDS = 60.0  # a batch is written in well under a second; a claim this old is a dead processor's
BATCH = 200  # deliveries per claim: one batched write per collection for all of them
RETRY_AFTER_FAILURE_SECONDS = 2.0
JOB = "webhooks"
NOT_LISTED = "the account is no longer listed (ACCOUNTS_FILTER); not written"
# What became of a delivery: at the listener (the first seven; `throttled`: refused 429 as its
# account had WEBHOOK_MAX_WAITING deliveries waiting), then at the processor (the last two).
OUTCOMES = ("accepted", "duplicate", "rejected_token", "rejected_sender", "too_large", "malformed", "throttled",
            "processed", "failed")
FLUSH_EVERY = timedelta(seconds=5)
# The cap's count of an account's waiting deliveries, taken again after this many accepts by one
# process (each other replica's slack over the cap)...
COUNT_EVERY = 100
# ... or once this old, so a delivery's rank follows its account's backlog as it drains.
COUNT_AGE_SECONDS = 1.0


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
        """`max_waiting`: the waiting entries one account may hold (accepting through its view: one
        Inbox per account for the process's life, as it keeps the account's count)."""
        self.entries = entries
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock
        self.max_waiting = max_waiting
        self._places = threading.Lock()
        self._counted = 0  # the account's waiting entries at the last count
        self._counted_at = float("-inf")  # time.monotonic() when that count began
        self._since = 0  # accepted by this process since that count, or being inserted when it began
        self._inserting = 0

    def accept(self, call_id: str, status: str, bolna_updated_at: datetime | None, body: bytes) -> bool:
        """Store one delivery; False when this call's status was delivered before (a duplicate).
        Raises InboxFull when the account has `max_waiting` deliveries waiting."""
        rank = self._take_place()
        stored = True  # an insert whose answer was lost may be stored: it holds its place until a count
        try:
            self.entries.insert_one(waiting_entry(call_id, status, bolna_updated_at, body, rank))
        except DuplicateKeyError:
            stored = False
        finally:
            with self._places:
                self._inserting -= 1
                if not stored:
                    self._since -= 1
        return stored

    def _take_place(self) -> int:
        """A place under the cap for one delivery, and its rank: the waiting entries counted, plus
        those this process accepted since. Counted again, under the lock, after COUNT_EVERY places,
        once COUNT_AGE_SECONDS old, and before any refusal."""
        with self._places:
            began = time.monotonic()
            if (self._since >= COUNT_EVERY or began - self._counted_at >= COUNT_AGE_SECONDS
                    or self._counted + self._since >= self.max_waiting):
                # No hint: the filter is exactly `userId_state`'s keys (the account's view adds
                # `userId`), which every planner picks; the test run's wire server walks a hinted index whole.
                self._counted = self.entries.count_documents({"state": WAITING}, limit=self.max_waiting)
                # Those being inserted keep their place: counted twice maybe, never missed.
                self._counted_at, self._since = began, self._inserting
            waiting = self._counted + self._since
            if waiting >= self.max_waiting:
                raise InboxFull(f"{self.max_waiting} deliveries of this account are waiting")
            self._since += 1
            self._inserting += 1
            return waiting

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


class DeliveryTally:
    def __init__(self, counts: Collection):
        self.counts = counts
        self._pending: Counter = Counter()
        self._lock = threading.Lock()
        self._flushed_at = utcnow()
        # What /metrics counts as it happens (worker/health.py's observe_webhooks sets them): the
        # deliveries by outcome, and the seconds from Bolna's `updated_at` to the write of the call.
        self.on_outcome: Callable[[str, int], None] = lambda outcome, n: None
        self.on_lag: Callable[[float], None] = lambda seconds: None

    def count(self, outcome: str, n: int = 1) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown delivery outcome {outcome!r}")
        if n <= 0:
            return
        with self._lock:
            self._pending[outcome] += n
        self.on_outcome(outcome, n)

    def flush(self, *, force: bool = False) -> None:
        """Add the counts since the last flush to this hour's document; at most every FLUSH_EVERY
        unless forced. Counts the database refused stay pending for the next flush."""
        now = utcnow()
        with self._lock:
            if not self._pending or (not force and now - self._flushed_at < FLUSH_EVERY):
                return
            pending, self._pending = self._pending, Counter()
            self._flushed_at = now
        hour = now.replace(minute=0, second=0, microsecond=0)
        try:
            self.counts.update_one({"_id": self.counts.local_id(hour.strftime("%Y-%m-%dT%H"))},
                                   {"$inc": {f"counts.{name}": n for name, n in pending.items()},
                                    "$setOnInsert": {"at": hour}}, upsert=True)
        except PyMongoError as exc:
            log.warning("webhook delivery counts not stored yet (%s)", describe_failure(exc),
                        extra={"event": "webhook_counts_deferred"})
            with self._lock:
                self._pending.update(pending)

    def totals(self, since: datetime) -> dict[str, int]:
        """Deliveries by outcome in the hours from `since` on (as stored: up to FLUSH_EVERY behind)."""
        totals = Counter()
        for doc in self.counts.find({"at": {"$gte": since.replace(minute=0, second=0, microsecond=0)}}):
            totals.update({name: n for name, n in (doc.get("counts") or {}).items() if name in OUTCOMES})
        return {name: totals.get(name, 0) for name in OUTCOMES}


@dataclass(frozen=True)
class AccountWriters:
    """How one account's deliveries are written: the poll's own writers, on the account's records."""
    calls: CallWriter
    customers: CustomerWriter
    region: str


class InboxProcessor:
    def __init__(self, inbox: Inbox, writers_for: Callable[[object], AccountWriters | None], tally: DeliveryTally,
                 *, batch: int = BATCH):
        """`writers_for(user_id)`: the writers of the account a delivery came for; None when the
        daemon no longer serves it."""
        self.inbox = inbox
        self.writers_for = writers_for
        self.tally = tally
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """A delivery was accepted: process it now rather than at the next poll."""
        self._wake.set()

    def start(self) -> "InboxProcessor":
        self._thread = threading.Thread(target=self._loop, name="webhook-processor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """After the batch in hand is written; a batch cut off is taken over once its lease expires."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30.0)
        self.tally.flush(force=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.process_batch()
                self.tally.flush()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one batch
                # A batch cut off here stays claimed until its lease ends, then is taken again
                # (at most MAX_ATTEMPTS times); a lost database connection passes by then.
                log.warning("webhook processing paused (%s); retrying", describe_failure(exc),
                            extra={"event": "webhook_processing_failed"}, exc_info=not isinstance(exc, PyMongoError))
                self._stop.wait(RETRY_AFTER_FAILURE_SECONDS)
                continue
            if not worked:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()

    def process_batch(self) -> int:
        """Claim and write one batch of waiting deliveries; how many were claimed."""
        token, deliveries = self.inbox.claim(self.batch)
        if not deliveries:
            return 0
        outcomes: list[Processed] = []
        by_account = sorted(deliveries, key=lambda delivery: str(delivery.user_id))
        try:
            for _, group in groupby(by_account, key=lambda delivery: delivery.user_id):
                outcomes += self._process(list(group))
        except PyMongoError:
            # Lost on the way: this account's part and those after it go back to the queue;
            # what was written before is closed.
            written = {outcome.entry_id for outcome in outcomes}
            self.inbox.release(token, [d.entry_id for d in deliveries if d.entry_id not in written])
            raise
        finally:
            self.inbox.finish(token, outcomes)
            failed = sum(1 for outcome in outcomes if outcome.error)
            self.tally.count("failed", failed)
            self.tally.count("processed", len(outcomes) - failed)
            for outcome in outcomes:
                if outcome.lag_ms is not None:
                    self.tally.on_lag(outcome.lag_ms / 1000)
        return len(deliveries)

    def _process(self, deliveries: list[Delivery]) -> list[Processed]:
        """One account's deliveries of the batch."""
        writers = self.writers_for(deliveries[0].user_id)
        if writers is None:
            return [Processed(delivery.entry_id, error=NOT_LISTED) for delivery in deliveries]
        outcomes: list[Processed] = []
        executions: dict[object, Execution] = {}
        for delivery in deliveries:
            if delivery.attempts > MAX_ATTEMPTS:
                error = f"cut off {MAX_ATTEMPTS} times; left to the poll"
                outcomes.append(Processed(delivery.entry_id, error=error))
                continue
            try:
                executions[delivery.entry_id] = parse_execution(json.loads(delivery.body), writers.region)
            except (ValueError, MalformedExecution) as exc:  # accepted by an older version's checks
                outcomes.append(Processed(delivery.entry_id, error=f"unreadable: {type(exc).__name__}"))
        try:
            self._write(writers, _latest_states(executions.values()))
        except PAGE_REFUSALS as exc:
            # The database refused this data (not a lost connection): each delivery alone, so
            # one bad record does not fail the others.
            log.warning("a batch of %d webhook deliveries was refused (%s); written one by one",
                        len(executions), describe_failure(exc), extra={"event": "webhook_batch_refused"})
            for entry_id, execution in executions.items():
                try:
                    self._write(writers, [execution])
                    outcomes.append(Processed(entry_id, lag_ms=_lag_ms(execution, utcnow())))
                except PAGE_REFUSALS as refused:
                    error = f"refused by the database: {describe_failure(refused)}"
                    outcomes.append(Processed(entry_id, error=error))
            return outcomes
        written_at = utcnow()
        return outcomes + [Processed(entry_id, lag_ms=_lag_ms(execution, written_at))
                           for entry_id, execution in executions.items()]

    @staticmethod
    def _write(writers: AccountWriters, executions: list[Execution]) -> None:
        recorder = RunRecorder(JOB)
        ordered = sorted(executions, key=lambda execution: execution.agent_id or "")
        for agent_id, group in groupby(ordered, key=lambda execution: execution.agent_id or ""):
            page = list(group)
            # Bolna posts on every status change, so all but a call's first delivery find it
            # stored: sent as stored, one round trip whether it is or not (a plain insert refused
            # by the unique `callId`, then the update, cost two; so would a read first).
            writers.calls.write(page, recorder, agent_id, {execution.id for execution in page})
            writers.customers.write(page, recorder, agent_id)


def _latest_states(executions: Iterable[Execution]) -> list[Execution]:
    """One execution per call: the furthest state among them (final over unfinished, then the
    newest), so a batch holding several deliveries of a call writes it once."""
    def progress(execution: Execution) -> tuple:
        updated = execution.updated_at
        return execution.terminal, updated is not None, updated or execution.created_at
    latest: dict[str, Execution] = {}
    for execution in executions:
        if execution.id not in latest or progress(execution) >= progress(latest[execution.id]):
            latest[execution.id] = execution
    return list(latest.values())


def _lag_ms(execution: Execution, written_at) -> int | None:
    if execution.updated_at is None:
        return None
    return max(0, round((written_at - execution.updated_at).total_seconds() * 1000))
