"""The account schedule: when each account (account) is synced next, and which replica syncs it now,
under a lease (services/lease.py). One document per account, `_id` the account id; its fields and
its index: docs/collections.md (`tenant_schedule`); how replicas share the work, and how
`LeaseKeeper` fences a replica whose lease may be gone: docs/scaling.md.

`active` is false while the account is retired or its key refused: it leads the claim index, so
the accounts that must be skipped (which stay overdue for as long as they are skipped) are outside
the range a claim scans, however many there are. Every write that sets or clears `retiredAt` or
`refused` sets `active` with it.

`register` and `overview` read the whole collection on purpose (a few small fields per account,
once per account-list refresh and per status request); every other write selects by `_id`.

`LlmQuota` is the ceiling on LLM analyses across every account and replica (docs/collections.md,
`llm_quota`). Its `$inc` never upserts: the total it returns is what the take is decided on, and
of two upserts racing to create a document, one may be answered with no document at all (the
test run's wire server) or a duplicate-key error, after its increment was or was not applied. The
window's document is created on its own first, where a race is harmless.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

from pymongo import ASCENDING, InsertOne, ReturnDocument, UpdateMany, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services import lease
from services.database import DUPLICATE_KEY, SCHEDULE_CLAIM_KEYS
from utils.clock import to_millis, unix_seconds, utcnow

log = logging.getLogger(__name__)


RUNNING, RETIRED, REFUSED, DUE, WAITING = "running", "retired", "refused", "due", "waiting"
STATES = (RUNNING, RETIRED, REFUSED, DUE, WAITING)
_ROW_FIELDS = ("dueAt", "keyFingerprint", lease.BY, lease.UNTIL, "refused", "retiredAt", "lastRun")


@dataclass(frozen=True)
class AccountClaim:
    account_id: object
    token: str  # unique per claim: only the holder of the current claim may write the outcome
    due_at: datetime  # the slot this sync serves: the next one is counted from it (`next_due`)
    claimed_at: datetime
    acquired_until: datetime
    key_fingerprint: str  # the key the schedule knew when the account was claimed


@dataclass(frozen=True)
class RegisterResult:
    added: int = 0
    rekeyed: int = 0  # fingerprint changed: any refusal cleared
    retired: int = 0
    returned: int = 0  # retired before, listed again


def next_due(previous_due: datetime, interval: timedelta, now: datetime) -> datetime:
    """The account's next slot: `previous_due` plus whole intervals, the first at least half an
    interval after `now` (the end of the sync).

    Slots keep each account's place in the interval, so accounts spread over it (the first
    register spreads them) stay spread: `now + interval` would move every account to when its sync
    happened to end, and after an outage all accounts synced in one burst would stay bunched for
    good. Whole intervals are skipped when a sync overran or the account waited (replicas down),
    rather than syncing it again at once for each missed slot; the half interval keeps a sync
    that ended just before its next slot from running again straight away."""
    slots = max(1, -(-(now + interval / 2 - previous_due) // interval))  # ceiling division
    return to_millis(previous_due + slots * interval)


def first_due_times(count: int, interval: timedelta, now: datetime) -> list[datetime]:
    """Due times of `count` accounts registered together, evenly over one interval from `now`, so
    that they are not all due at once, then or later (`next_due`); a single new account is due now."""
    return [to_millis(now + interval * n / count) for n in range(count)]


class AccountSchedule:
    def __init__(self, collection: Collection, owner: str, lease_seconds: float, interval_seconds: float,
                 clock: Callable[[], datetime] = utcnow):
        """`owner`: this replica (host:pid:random), shown in status. `interval_seconds`: how often
        a account is synced, for the first spread and the default next due time."""
        self._schedule = collection
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.interval = timedelta(seconds=interval_seconds)
        self.clock = clock

    # -- the account list --------------------------------------------------------------------

    def register(self, accounts: Iterable[tuple[object, str]]) -> RegisterResult:
        """Bring the schedule in line with the current account list, (account id, key fingerprint)
        pairs, as docs/collections.md tells (a retired account is never claimed; a sync in progress
        may finish).

        A bounded number of round trips whatever the number of accounts: one read of the whole
        schedule (a few fields each) and one unordered bulk write of the changes only, so a refresh
        that changes nothing writes nothing; retired and returning accounts are one `$in` update
        each. Each write is guarded by what it changes, and a new account another replica inserted
        first is a duplicate that is passed over, so replicas registering at once neither fail nor
        undo each other's changes.

        An empty list retires every account: a account source that cannot read the accounts must
        raise, not return nothing."""
        listed = dict(accounts)
        known = {doc["_id"]: doc for doc in self._schedule.find(
            {}, {"keyFingerprint": 1, "retiredAt": 1})}
        now = self.clock()
        operations: list = []
        new = [account_id for account_id in listed if account_id not in known]
        for account_id, due_at in zip(new, first_due_times(len(new), self.interval, now)):
            operations.append(InsertOne({"_id": account_id, "dueAt": due_at, "keyFingerprint": listed[account_id],
                                         "active": True, "registeredAt": now}))
        rekeyed = [account_id for account_id, doc in known.items()
                   if account_id in listed and doc.get("keyFingerprint") != listed[account_id]]
        for account_id in rekeyed:
            # Listed, with another key: neither retired nor refused any more, whatever it was.
            operations.append(UpdateOne(
                {"_id": account_id, "keyFingerprint": known[account_id].get("keyFingerprint")},
                {"$set": {"keyFingerprint": listed[account_id], "active": True},
                 "$unset": {"refused": "", "retiredAt": ""}}))
        returned = [account_id for account_id, doc in known.items()
                    if account_id in listed and "retiredAt" in doc and doc.get("keyFingerprint") == listed[account_id]]
        if returned:
            # Active again unless its (unchanged) key is refused: both cases, each guarded, so a
            # refusal written between the read and this write is kept.
            back = {"_id": {"$in": returned}, "retiredAt": {"$exists": True}}
            operations.append(UpdateMany({**back, "refused": None},
                                         {"$set": {"active": True}, "$unset": {"retiredAt": ""}}))
            operations.append(UpdateMany({**back, "refused": {"$ne": None}}, {"$unset": {"retiredAt": ""}}))
        retired = [account_id for account_id, doc in known.items()
                   if account_id not in listed and "retiredAt" not in doc]
        if retired:
            operations.append(UpdateMany({"_id": {"$in": retired}, "retiredAt": None},
                                         {"$set": {"retiredAt": now, "active": False}}))
        if operations:
            try:
                self._schedule.bulk_write(operations, ordered=False)
            except BulkWriteError as failure:
                # Unordered, so every other write was applied. A failed insert of a new account (the
                # first `len(new)` writes) that is in the schedule now was another replica's
                # register, done first; any other failure is raised.
                errors = failure.details.get("writeErrors", [])
                duplicates = [new[error["index"]] for error in errors
                              if error.get("code") == DUPLICATE_KEY and error["index"] < len(new)]
                if (len(duplicates) != len(errors) or failure.details.get("writeConcernErrors")
                        or self._schedule.count_documents({"_id": {"$in": duplicates}}) != len(duplicates)):
                    raise
        return RegisterResult(added=len(new), rekeyed=len(rekeyed), retired=len(retired), returned=len(returned))

    # -- claims ----------------------------------------------------------------------------

    def claim_due(self, due_by: datetime | None = None) -> AccountClaim | None:
        """The account due longest that no live lease holds, leased to this replica; None when no
        account is due. Atomic on the server: of two replicas asking at once, one gets it.
        `due_by`: a later time than now to count as due by (`main.py once`: every account)."""
        token, now = lease.new_token(), self.clock()
        until = to_millis(now + self.lease)
        doc = self._schedule.find_one_and_update(
            {"active": True, "dueAt": {"$lte": max(now, due_by or now)}, **lease.free(now)},
            {"$set": lease.taken(self.owner, token, until)},
            sort=[("dueAt", ASCENDING)],
            hint=SCHEDULE_CLAIM_KEYS,
            projection={"dueAt": 1, "keyFingerprint": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return AccountClaim(doc["_id"], token, doc["dueAt"], now, until, doc.get("keyFingerprint", ""))

    def renew(self, claim: AccountClaim) -> datetime | None:
        """Hold the account for another lease from now: the lease's new end; None when the lease
        was lost (it expired and another replica took the account, or it was released). A lease that
        expired but that no replica took yet is still this claim's: nobody else synced the account
        meanwhile."""
        until = to_millis(self.clock() + self.lease)
        return until if self._write(claim, {"$set": {lease.UNTIL: until}}) else None

    def finish(self, claim: AccountClaim, result: dict, *, after: datetime | None = None) -> bool:
        """Record the sync (`result`: the runtime's outcome, with a `status`) as the account's last
        run and make it due again at its next slot (`next_due`; the first slot past `after` when
        given: a pass claiming by a later `due_by` must not meet the account again); the lease is
        removed. False when the lease was lost, in which case nothing was written: the replica that
        took the account over records its own run."""
        if "status" not in result:
            raise ValueError("a run's result needs a status")
        now = self.clock()
        due = next_due(claim.due_at, self.interval, now)
        while after is not None and due <= after:
            due += self.interval
        return self._write(claim, {"$set": {"dueAt": due, "lastRun": self._run(claim, now, result)},
                                   "$unset": lease.RELEASED})

    def release(self, claim: AccountClaim) -> bool:
        """Give the account back unsynced (shutdown, a sync cut off): still due, for any replica at
        once. False when the lease was lost already."""
        return self._write(claim, {"$unset": lease.RELEASED})

    def mark_refused(self, claim: AccountClaim, reason: str, *, key_fingerprint: str | None = None) -> bool:
        """The account's key was refused: it is skipped, and the others go on, until `register`
        sees another fingerprint for it (`key_fingerprint`: the refused key's, by default the one
        claimed). It stays due, so the new key is tried at once.

        False when nothing was marked: the lease was lost, or the account's key changed while it
        was synced with the old one, in which case the lease is released and the new key gets
        its own try."""
        fingerprint = claim.key_fingerprint if key_fingerprint is None else key_fingerprint
        now = self.clock()
        marked = self._write(claim, {"$set": {
            "active": False, "refused": {"reason": reason, "since": now, "keyFingerprint": fingerprint},
            "lastRun": self._run(claim, now, {"status": REFUSED, "errors": [reason]})}, "$unset": lease.RELEASED},
            keyFingerprint=fingerprint)
        if not marked:
            self.release(claim)
        return marked

    def _write(self, claim: AccountClaim, update: dict, **condition) -> bool:
        """Whether the account, still held by this claim (fenced by its token), took `update`."""
        held = {"_id": claim.account_id, lease.TOKEN: claim.token, **condition}
        return self._schedule.update_one(held, update).matched_count == 1

    def _run(self, claim: AccountClaim, now: datetime, result: dict) -> dict:
        return {**result, "startedAt": claim.claimed_at, "finishedAt": now, "owner": self.owner}

    # -- status ----------------------------------------------------------------------------

    def counts(self, now: datetime | None = None) -> dict[str, int]:
        """How many accounts are in each state (`overview`'s counts; /metrics reads them alone)."""
        now = now or self.clock()
        counts = dict.fromkeys(STATES, 0)
        for group in self._schedule.aggregate([{"$group": {"_id": _state_expression(now), "n": {"$sum": 1}}}]):
            counts[group["_id"]] = group["n"]
        return counts

    def overview(self, limit: int = 50) -> dict:
        """What status shows: the `counts`, and up to `limit` accounts that are not retired, the
        longest due first, each with its state and its `_ROW_FIELDS`."""
        now = self.clock()
        counts = self.counts(now)
        rows = [{"accountId": doc.pop("_id"), **doc} for doc in self._schedule.aggregate([
            {"$match": {"retiredAt": None}}, {"$sort": {"dueAt": ASCENDING}}, {"$limit": limit},
            {"$project": {"state": _state_expression(now), **{field: 1 for field in _ROW_FIELDS}}}])]
        return {"counts": counts, "total": sum(counts.values()), "accounts": rows}


def _state_expression(now: datetime) -> dict:
    """One state per account, the first that applies (the order of `STATES`: running is held by a
    live lease; due includes an expired lease's), on the server: the counts are taken without
    reading every account."""
    return {"$switch": {"branches": [
        {"case": {"$gt": ["$" + lease.UNTIL, now]}, "then": RUNNING},
        {"case": _present("$retiredAt"), "then": RETIRED},
        {"case": _present("$refused"), "then": REFUSED},
        {"case": {"$lte": ["$dueAt", now]}, "then": DUE},
    ], "default": WAITING}}


def _present(field: str) -> dict:
    # $ifNull, not a comparison with null: how a missing field compares differs between servers.
    return {"$ne": [{"$ifNull": [field, None]}, None]}


class LeaseKeeper:
    def __init__(self, schedule: AccountSchedule, claim: AccountClaim, process_stop: threading.Event):
        self._schedule = schedule
        self._claim = claim
        self._process_stop = process_stop
        # The account's stop, given to its jobs: set on the process's stop or when the lease may be gone.
        self.stop = threading.Event()
        self.lost = False
        # Server time, as the schedule compares it; written by the renewal alone, read by the watch.
        self._valid_until = claim.acquired_until
        self._margin = max(timedelta(seconds=2), schedule.lease / 10)
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
            try:
                until = self._schedule.renew(self._claim)
            except Exception:  # noqa: BLE001 - MongoDB away for a moment: the watch fences if it lasts
                log.warning("could not renew an account's lease", exc_info=True, extra={"event": "lease_renew_failed"})
                continue
            if until is None:
                self._fence("another replica holds it now")
                return
            self._valid_until = max(self._valid_until, until)

    def _watch(self) -> None:
        tick = min(1.0, self._schedule.lease.total_seconds() / 10)
        while not self._done.wait(tick):
            if self._process_stop.is_set():
                self.stop.set()
            if self._schedule.clock() >= self._valid_until - self._margin:
                self._fence("no renewal was confirmed in time")
                return

    def _fence(self, why: str) -> None:
        self.lost = True
        self.stop.set()
        log.warning("account %s: its lease may be gone (%s); its sync stops after the current write",
                    self._claim.account_id, why, extra={"event": "account_lease_lost"})


class LlmQuota:
    def __init__(self, counters: Collection, ceiling: int, interval: timedelta, clock: Callable[[], datetime]):
        """`clock`: the database server's (services/lease.py, `ServerClock`), so replicas agree on the window."""
        self._counters = counters
        self._ceiling = ceiling
        self._interval = interval
        self._clock = clock

    def take(self, wanted: int) -> "Grant":
        if wanted <= 0:
            return Grant(0, lambda unused: None)
        now = self._clock()
        window = int(unix_seconds(now) // self._interval.total_seconds())
        counter = self._increment(window, wanted)
        if counter is None:  # the window's first take: create its counter, then take
            try:
                self._counters.update_one({"_id": window}, {"$setOnInsert": {"taken": 0, "at": now}}, upsert=True)
            except DuplicateKeyError:
                pass  # another replica created it at the same instant
            counter = self._increment(window, wanted)
        overshoot = min(wanted, max(0, counter["taken"] - self._ceiling))
        if overshoot:
            self._give_back(window, overshoot)
        return Grant(wanted - overshoot, lambda unused: self._give_back(window, unused))

    def _increment(self, window: int, count: int) -> dict | None:
        return self._counters.find_one_and_update({"_id": window}, {"$inc": {"taken": count}},
                                                  return_document=ReturnDocument.AFTER)

    def _give_back(self, window: int, count: int) -> None:
        self._counters.update_one({"_id": window}, {"$inc": {"taken": -count}})


@dataclass
class Grant:
    """Analyses an account may make in this run; `settle(used)` returns the rest to its window."""
    count: int
    give_back: Callable[[int], None]

    def settle(self, used: int) -> None:
        unused = self.count - min(used, self.count)
        if unused:
            self.give_back(unused)
        self.count -= unused
