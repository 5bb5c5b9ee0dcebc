"""A job's sync state per agent, kept in `sync_state`: the cursor, and the calls followed by id.

The cursor is a low-water mark: every call created before it is stored in its final form. The
rules that keep it one are the pure functions below; `SyncState` loads and saves, and records where
an agent's first sync starts.

- A run reads from the cursor minus an overlap. An agent's first sync reads from where its
  backfill starts, recorded once for the agent by the first run of either job to get there, before
  it writes anything: a first sync cut off by a crash and restarted hours later reads from the same
  point, and both jobs store the same history (`SyncState.read_from`).
- The cursor moves only after a whole time window was written, to how far every page of it saw
  by Bolna's clock (`WindowPage.read_through`), or to the oldest call that must be read again
  among all the windows of the run so far (`WindowProgress`), whichever is sooner.
- An unfinished call holds the cursor while it is young (its transcript and extracted data are
  still to come). One still unfinished after `PENDING_HOLD` (scheduled far ahead, or stuck)
  stops holding it, so one odd call cannot make every run re-read days of history: it is
  followed by id instead, a few per run, until it is final or `PENDING_MAX_AGE` old. The same
  holds for a call that could not be read or written (a full record answering 5xx, a page the
  database refuses): retried while young, then followed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymongo import ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

PENDING_HOLD = timedelta(hours=6)
PENDING_MAX_AGE = timedelta(days=14)
PENDING_PER_RUN = 50

# Cursors are saved together: at the end of a run, and during a long backfill every this many
# completed windows. Losing unsaved ones to a crash only means re-reading (writes are idempotent).
SAVE_EVERY_WINDOWS = 8


@dataclass(frozen=True)
class Followed:
    created_at: datetime
    checked_at: datetime | None = None  # the last run that fetched it; None: never yet


@dataclass
class WindowProgress:
    """What a run's pages said about where the cursor may go. One spans all the windows of an
    agent's run: a call held in an early window still holds the cursor after a later one."""
    hold: datetime | None = None  # the oldest call that must be read again by the next run
    followed: dict[str, Followed] = field(default_factory=dict)

    def unfinished(self, call_id: str, created_at: datetime, now: datetime) -> None:
        """A call the next run must see again: not final yet, or not read or written this time."""
        if now - created_at < PENDING_HOLD:  # young: it holds the cursor
            self.hold = created_at if self.hold is None else min(self.hold, created_at)
        else:
            self.followed[call_id] = Followed(created_at)

    def cursor(self, window_end: datetime) -> datetime:
        """The cursor once the whole window is written (`window_end`: how far its pages saw)."""
        return window_end if self.hold is None else min(window_end, self.hold)


@dataclass
class FollowUps:
    """Of the calls followed by id, what this run does with each."""
    fetch: list[str]
    keep: dict[str, Followed]  # not reached this run
    expired: list[str]         # unfinished for too long: no longer followed


def follow_ups(pending: dict[str, Followed], now: datetime) -> FollowUps:
    """`PENDING_PER_RUN` calls are fetched this run: never checked first, then least recently
    checked, so a few that never finish cannot starve the others."""
    expired = [call_id for call_id, followed in pending.items() if now - followed.created_at > PENDING_MAX_AGE]
    order = [call_id for *_order, call_id in sorted(
        (followed.checked_at is not None, followed.checked_at, followed.created_at, call_id)
        for call_id, followed in pending.items() if now - followed.created_at <= PENDING_MAX_AGE)]
    return FollowUps(order[:PENDING_PER_RUN], {call_id: pending[call_id] for call_id in order[PENDING_PER_RUN:]},
                     expired)


class SyncState:
    """One job's state for every agent: read in one query, written in one batch, by its run's thread
    alone (the read-ahead thread only reads pages)."""

    def __init__(self, state: Collection, job: str, now: datetime):
        self.state = state
        self.job = job
        self.now = now
        self.stored = {doc["agentId"]: {"cursor": doc.get("cursor"),
                                        "pending": {p["callId"]: Followed(p["createdAt"], p.get("checkedAt"))
                                                    for p in doc.get("pending", [])}}
                       for doc in state.find({"job": job})}
        self.unsaved: set[str] = set()
        self.windows_since_save = 0

    def _agent(self, agent_id: str) -> dict:
        return self.stored.setdefault(agent_id, {"cursor": None, "pending": {}})

    def cursor(self, agent_id: str) -> datetime | None:
        return self._agent(agent_id)["cursor"]

    def read_from(self, agent_id: str, *, overlap: timedelta, backfill: timedelta) -> datetime:
        """A little before the cursor; on a first sync, the agent's backfill start, the first
        proposal kept in one atomic upsert (two daemons at once get the same)."""
        cursor = self.cursor(agent_id)
        if cursor is not None:
            return cursor - overlap
        key = {"_id": self.state.local_id(f"backfill:{agent_id}")}
        try:
            recorded = self.state.find_one_and_update(
                key, {"$setOnInsert": {"agentId": agent_id, "backfillFrom": self.now - backfill}},
                upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            recorded = None
        # Two first syncs at once: the upsert that loses the insert race may fail on the key
        # (MongoDB) or answer no document (the test's wire server); the winner's start is stored.
        return (recorded or self.state.find_one(key))["backfillFrom"]

    def pending(self, agent_id: str) -> dict[str, Followed]:
        return dict(self._agent(agent_id)["pending"])

    def set_pending(self, agent_id: str, pending: dict[str, Followed]) -> None:
        if pending != self._agent(agent_id)["pending"]:
            self._agent(agent_id)["pending"] = pending
            self.unsaved.add(agent_id)

    def window_done(self, agent_id: str, window_end: datetime, progress: WindowProgress) -> None:
        """A window was fully written: move the cursor, follow the calls it passed unfinished."""
        state = self._agent(agent_id)
        state["cursor"] = progress.cursor(window_end)
        # A call already followed keeps its record (when it was last checked).
        state["pending"] = {**progress.followed, **state["pending"]}
        self.unsaved.add(agent_id)
        self.windows_since_save += 1
        if self.windows_since_save >= SAVE_EVERY_WINDOWS:
            self.save()

    def save(self) -> None:
        if self.unsaved:
            self.state.bulk_write([self._save_operation(agent_id) for agent_id in sorted(self.unsaved)])
        self.unsaved.clear()
        self.windows_since_save = 0

    def _save_operation(self, agent_id: str) -> UpdateOne:
        agent = self.stored[agent_id]
        pending = [{"callId": call_id, "createdAt": followed.created_at, "checkedAt": followed.checked_at}
                   for call_id, followed in agent["pending"].items()]
        return UpdateOne({"_id": self.state.local_id(f"{self.job}:{agent_id}")},
                         {"$set": {"job": self.job, "agentId": agent_id, "cursor": agent["cursor"],
                                   "pending": pending, "updatedAt": self.now}}, upsert=True)


def oldest_cursor(state: Collection, job: str) -> datetime | None:
    """How far behind Bolna `job` is, for the metrics: the query a run's `SyncState` makes, so it is
    read from the same index."""
    cursors = [doc["cursor"] for doc in state.find({"job": job}, {"cursor": 1}) if doc.get("cursor")]
    return min(cursors, default=None)
