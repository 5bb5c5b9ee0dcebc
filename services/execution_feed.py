"""Walks each agent's executions since its cursor and hands pages to a job.

Shared by both jobs; each keeps its own cursor per agent in `sync_state`. The cursor is a
low-water mark: everything created before it is stored in its final form. It moves only
after a whole time window was written, and never past a call that is not terminal yet (its
transcript and extracted data are still to come) or whose full record could not be fetched;
a call that stays unfinished for hours is followed by id instead (`PENDING_HOLD`).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Protocol

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from models.execution import Execution, MalformedExecution, needs_full_record, parse_execution
from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError
from services.run_record import RunRecorder, utcnow
from services.storage import SYNC_STATE

log = logging.getLogger(__name__)

# Cursors are saved together: at the end of a run, and during a long backfill every this many
# completed windows. Losing unsaved ones to a crash only means re-reading (writes are idempotent).
SAVE_EVERY_WINDOWS = 8

# A call still not terminal after this long (scheduled far ahead, or stuck) stops holding the
# cursor, so one odd call cannot make every run re-read days of history. It is then followed by
# id, a few per run, until it is terminal or PENDING_MAX_AGE old.
PENDING_HOLD = timedelta(hours=6)
PENDING_MAX_AGE = timedelta(days=14)
PENDING_PER_RUN = 50


class PageJob(Protocol):
    name: str

    def unchanged(self, items: list[dict]) -> set[str]:
        """Ids among these raw list items that are already stored final and need no work."""

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> None:
        """Store one page (one batched write)."""


@dataclass
class PageRead:
    executions: list[Execution]  # to write
    hold: datetime | None        # oldest call the cursor must not pass
    followed: dict[str, datetime]  # unfinished for hours: to follow by id once the window is done


class ExecutionFeed:
    def __init__(self, db: Database, client: BolnaClient, *, stop: threading.Event | None = None,
                 agent_ids: Iterable[str] = (), backfill: timedelta = timedelta(days=30),
                 overlap: timedelta = timedelta(minutes=10)):
        self.state = db[SYNC_STATE]
        self.stop = stop or threading.Event()
        self.client = client
        self.agent_ids = tuple(agent_ids)
        self.backfill = backfill
        self.overlap = overlap

    def agents(self) -> list[str]:
        return list(self.agent_ids) or [str(agent["id"]) for agent in self.client.list_agents()]

    def run(self, job: PageJob, recorder: RunRecorder, *, full: bool = False) -> None:
        """Sync every agent; one agent's failure is recorded and the others still run.
        A refused API key stops the run: every further request would be refused too."""
        now = utcnow()
        cursors = Cursors(self.state, job.name, now)
        try:
            for agent_id in self.agents():
                if self.stop.is_set():
                    recorder.error("stopped before every agent was synced; the next run resumes",
                                   code="interrupted")
                    return
                cursor = None if full else cursors.get(agent_id)
                start = cursor - self.overlap if cursor else now - self.backfill
                try:
                    self._sync_agent(job, recorder, agent_id, start, now, cursors)
                except BolnaAuthError:
                    raise
                except BolnaError as exc:
                    recorder.error(f"agent {agent_id}: {exc}", code="bolna_error", agent_id=agent_id)
        finally:
            cursors.save()

    def _sync_agent(self, job: PageJob, recorder: RunRecorder, agent_id: str, start: datetime,
                    now: datetime, cursors: "Cursors") -> None:
        self._follow_pending(job, recorder, agent_id, now, cursors)
        hold: datetime | None = None  # oldest call that must be read again next run
        followed: dict[str, datetime] = {}  # calls too old to hold it, to fetch by id from now on
        for page in self.client.iter_pages(agent_id, start, now):
            if self.stop.is_set():
                recorder.error(f"agent {agent_id}: stopped before the sync finished; the next run resumes",
                               code="interrupted", agent_id=agent_id)
                return
            recorder.add("fetched", len(page), agent_id)
            read = self._read_page(job, page, recorder, agent_id, now)
            if read.executions:
                job.write(read.executions, recorder, agent_id)
            if read.hold and (hold is None or read.hold < hold):
                hold = read.hold
            followed.update(read.followed)
            if page.last:
                cursors.advance(agent_id, min(page.window_end, hold or page.window_end), followed)
                followed = {}

    def _follow_pending(self, job: PageJob, recorder: RunRecorder, agent_id: str, now: datetime,
                        cursors: "Cursors") -> None:
        """Fetch by id the calls the cursor has passed while they were not terminal; write those
        that now are, keep following the rest."""
        pending = cursors.pending(agent_id)
        if not pending:
            return
        still: dict[str, datetime] = {}
        finished: list[Execution] = []
        for number, (call_id, created_at) in enumerate(sorted(pending.items(), key=lambda p: p[1])):
            if number >= PENDING_PER_RUN:
                still[call_id] = created_at
                continue
            if now - created_at > PENDING_MAX_AGE:
                recorder.error(f"call {call_id} is still not terminal after {PENDING_MAX_AGE.days} days; "
                               "no longer followed", code="pending_expired", call_id=call_id, agent_id=agent_id)
                continue
            try:
                execution = parse_execution(self.client.get_execution(call_id))
            except BolnaAuthError:
                raise
            except (BolnaError, MalformedExecution) as exc:
                recorder.error(f"pending call {call_id}: {exc}", code="bolna_error", call_id=call_id,
                               agent_id=agent_id)
                if isinstance(exc, BolnaError) and exc.retryable:
                    still[call_id] = created_at
                continue
            if execution.terminal:
                execution.agent_id = execution.agent_id or agent_id
                finished.append(execution)
            else:
                still[call_id] = created_at
        if finished:
            job.write(finished, recorder, agent_id)
            recorder.add("pendingFinished", len(finished), agent_id)
        cursors.set_pending(agent_id, still)

    def _read_page(self, job: PageJob, page: list, recorder: RunRecorder, agent_id: str,
                   now: datetime) -> "PageRead":
        items = [item for item in page if isinstance(item, dict)]
        known = job.unchanged(items)
        executions: list[Execution] = []
        followed: dict[str, datetime] = {}
        hold: datetime | None = None
        for item in page:
            try:
                execution = self._full_execution(item, known)
            except MalformedExecution as exc:
                recorder.error(f"malformed execution: {exc}", code=exc.code, call_id=exc.call_id,
                               agent_id=agent_id)
                continue
            except BolnaAuthError:
                raise
            except BolnaError as exc:
                listed = parse_execution(item)
                if exc.retryable:
                    # Worth another try: hold the cursor so a later run fetches it again. A
                    # refusal (404, 422) would hold it, and re-read everything after, forever.
                    hold = min(hold or listed.created_at, listed.created_at)
                recorder.error(f"full record of {listed.id}: {exc}", code="bolna_error",
                               call_id=listed.id, agent_id=agent_id)
                continue
            if execution is None:
                recorder.add("unchanged", 1, agent_id)
                continue
            if not execution.terminal:
                recorder.add("pending", 1, agent_id)
                if now - execution.created_at < PENDING_HOLD:
                    hold = min(hold or execution.created_at, execution.created_at)
                else:
                    followed[execution.id] = execution.created_at
            if execution.agent_id is None:
                execution.agent_id = agent_id
            executions.append(execution)
        return PageRead(executions, hold, followed)

    def _full_execution(self, item: object, known: set[str]) -> Execution | None:
        """The execution with every field the jobs need, or None when nothing changed."""
        listed = parse_execution(item)
        if listed.id in known:
            return None
        if needs_full_record(item):  # type: ignore[arg-type]
            full = parse_execution(self.client.get_execution(listed.id))
            if full.id != listed.id:
                raise MalformedExecution(f"GET /executions/{listed.id} returned id {full.id}", listed.id)
            return full
        return listed


class Cursors:
    """One job's sync state per agent: its cursor and the calls it follows by id
    (`pending`: call id -> created_at). Read in one query, written in one batch."""

    def __init__(self, state: Collection, job: str, now: datetime):
        self.state = state
        self.job = job
        self.now = now
        self.stored = {doc["agentId"]: {"cursor": doc.get("cursor"),
                                        "pending": {p["callId"]: p["createdAt"] for p in doc.get("pending", [])}}
                       for doc in state.find({"job": job})}
        self.unsaved: set[str] = set()
        self.windows_since_save = 0

    def _agent(self, agent_id: str) -> dict:
        return self.stored.setdefault(agent_id, {"cursor": None, "pending": {}})

    def get(self, agent_id: str) -> datetime | None:
        return self._agent(agent_id)["cursor"]

    def pending(self, agent_id: str) -> dict[str, datetime]:
        return dict(self._agent(agent_id)["pending"])

    def set_pending(self, agent_id: str, pending: dict[str, datetime]) -> None:
        if pending != self._agent(agent_id)["pending"]:
            self._agent(agent_id)["pending"] = pending
            self.unsaved.add(agent_id)

    def advance(self, agent_id: str, cursor: datetime, passed_pending: dict[str, datetime]) -> None:
        """A window was fully written: everything before `cursor` is stored in its final form,
        except the calls in `passed_pending`, which are followed by id from now on."""
        state = self._agent(agent_id)
        state["cursor"] = cursor
        state["pending"] = {**state["pending"], **passed_pending}
        self.unsaved.add(agent_id)
        self.windows_since_save += 1
        if self.windows_since_save >= SAVE_EVERY_WINDOWS:
            self.save()

    def save(self) -> None:
        if self.unsaved:
            self.state.bulk_write([
                UpdateOne({"_id": f"{self.job}:{agent_id}"},
                          {"$set": {"job": self.job, "agentId": agent_id, "cursor": self.stored[agent_id]["cursor"],
                                    "pending": [{"callId": call_id, "createdAt": created_at} for call_id, created_at
                                                in self.stored[agent_id]["pending"].items()],
                                    "updatedAt": self.now}}, upsert=True)
                for agent_id in sorted(self.unsaved)])
        self.unsaved.clear()
        self.windows_since_save = 0
