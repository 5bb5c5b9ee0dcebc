"""The page loop: walks each agent's executions since its cursor and hands pages to a writer.

Shared by both jobs; each keeps its own sync state per agent (`services/sync_state.py` holds the
rules for where the cursor may go). Pages are read by `PageReader` and written by the job's
writer, one batched write per page.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Iterable, Protocol

from pymongo.database import Database

from models.execution import Execution, MalformedExecution
from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError
from services.database import SYNC_STATE
from services.page_reader import PageReader
from services.run_records import RunRecorder
from services.sync_state import PENDING_MAX_AGE, SyncState, WindowProgress, follow_ups, read_from
from utils.clock import utcnow



class PageWriter(Protocol):
    def unchanged(self, items: list[dict]) -> set[str]:
        """Ids among these raw list items that are already stored final and need no work."""

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> None:
        """Store one page (one batched write)."""


class ExecutionFeed:
    def __init__(self, db: Database, client: BolnaClient, reader: PageReader, *,
                 stop: threading.Event | None = None, agent_ids: Iterable[str] = (),
                 backfill: timedelta = timedelta(days=30), overlap: timedelta = timedelta(minutes=10)):
        self.state = db[SYNC_STATE]
        self.stop = stop or threading.Event()
        self.client = client
        self.reader = reader
        self.agent_ids = tuple(agent_ids)
        self.backfill = backfill
        self.overlap = overlap

    def agents(self) -> list[str]:
        return list(self.agent_ids) or [str(agent["id"]) for agent in self.client.list_agents()]

    def run(self, job: str, writer: PageWriter, recorder: RunRecorder, *, full: bool = False) -> None:
        """Sync every agent under `job`'s cursors; one agent's failure is recorded and the others
        still run. A refused API key stops the run: every further request would be refused too."""
        now = utcnow()
        state = SyncState(self.state, job, now)
        try:
            for agent_id in self.agents():
                if self.stop.is_set():
                    recorder.error("stopped before every agent was synced; the next run resumes",
                                   code="interrupted")
                    return
                start = read_from(None if full else state.cursor(agent_id), now,
                                  overlap=self.overlap, backfill=self.backfill)
                try:
                    self._follow_up(writer, recorder, agent_id, now, state)
                    self._sync_agent(writer, recorder, agent_id, start, now, state)
                except BolnaAuthError:
                    raise
                except BolnaError as exc:
                    recorder.error(f"agent {agent_id}: {exc}", code="bolna_error", agent_id=agent_id)
        finally:
            state.save()

    def _sync_agent(self, writer: PageWriter, recorder: RunRecorder, agent_id: str, start: datetime,
                    now: datetime, state: SyncState) -> None:
        progress = WindowProgress()
        for page in self.client.iter_pages(agent_id, start, now):
            if self.stop.is_set():
                recorder.error(f"agent {agent_id}: stopped before the sync finished; the next run resumes",
                               code="interrupted", agent_id=agent_id)
                return
            recorder.add("fetched", len(page), agent_id)
            items = [item for item in page if isinstance(item, dict)]
            read = self.reader.read(page, writer.unchanged(items), recorder, agent_id)
            recorder.add("unchanged", read.unchanged, agent_id)
            for created_at in read.retry:
                progress.read_again(created_at)
            for execution in read.executions:
                if not execution.terminal:
                    recorder.add("pending", 1, agent_id)
                    progress.unfinished(execution.id, execution.created_at, now)
            if read.executions:
                writer.write(read.executions, recorder, agent_id)
            if page.last:
                state.window_done(agent_id, page.window_end, progress)
                progress = WindowProgress()

    def _follow_up(self, writer: PageWriter, recorder: RunRecorder, agent_id: str, now: datetime,
                   state: SyncState) -> None:
        """Fetch by id the calls the cursor passed while they were unfinished; write those that
        are final now, keep following the rest."""
        pending = state.pending(agent_id)
        if not pending:
            return
        plan = follow_ups(pending, now)
        still = dict(plan.keep)
        for call_id in plan.expired:
            recorder.error(f"call {call_id} is still not terminal after {PENDING_MAX_AGE.days} days; "
                           "no longer followed", code="pending_expired", call_id=call_id, agent_id=agent_id)
        finished: list[Execution] = []
        for call_id in plan.fetch:
            try:
                execution = self.reader.fetch(call_id)
            except BolnaAuthError:
                raise
            except (BolnaError, MalformedExecution) as exc:
                recorder.error(f"pending call {call_id}: {exc}", code="bolna_error", call_id=call_id,
                               agent_id=agent_id)
                if isinstance(exc, BolnaError) and exc.retryable:
                    still[call_id] = pending[call_id]
                continue
            if execution.terminal:
                execution.agent_id = execution.agent_id or agent_id
                finished.append(execution)
            else:
                still[call_id] = pending[call_id]
        if finished:
            writer.write(finished, recorder, agent_id)
            recorder.add("pendingFinished", len(finished), agent_id)
        state.set_pending(agent_id, still)
