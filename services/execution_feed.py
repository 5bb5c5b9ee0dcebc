"""The page loop: walks each agent's executions since its cursor and hands pages to a writer.

Shared by both jobs; each keeps its own sync state per agent (`services/sync_state.py` holds the
rules for where the cursor may go). Pages are read by `PageReader` one page ahead of the
writes (`read_ahead`: two pages held at most, whatever the history) and written by the job's
writer, one batched write per page.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Protocol

from bson.errors import InvalidDocument
from pymongo.database import Database
from pymongo.errors import DocumentTooLarge, OperationFailure

from models.execution import Execution, MalformedExecution
from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError, WindowPage
from services.database import SYNC_STATE
from services.page_reader import PageRead, PageReader
from services.read_ahead import read_ahead
from services.run_records import RunRecorder, describe_failure
from services.sync_state import PENDING_MAX_AGE, Followed, SyncState, WindowProgress, follow_ups

# What the database says about one page's data (a document too large, a field of the wrong type in
# an old record): the page is refused, the run goes on. A lost connection is not among them: every
# later write would fail too, so it ends the run and the next run starts over.
PAGE_REFUSALS = (OperationFailure, DocumentTooLarge, InvalidDocument)


class PageWriter(Protocol):
    def unchanged(self, items: list[dict]) -> set[str]:
        """Ids among these raw list items that are already stored final and need no work."""

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> None:
        """Store one page (one batched write)."""


@dataclass
class _Run:
    """One job's run, as its agents share it."""
    job: str
    writer: PageWriter
    recorder: RunRecorder
    state: SyncState
    now: datetime
    ahead: ThreadPoolExecutor  # reads the next page while this one is written


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
        still run. A refused API key stops the run: every further request would be refused too.

        Agents are synced one after another, so pages are written in the order Bolna lists them
        (a customer's status changes are recorded in that order); the time goes to fetching, and
        that runs ahead of the writes and side by side (`read_ahead`, `PageReader`).

        "Now" is Bolna's, as the cursor is: the ages of unfinished calls and the backfill are
        measured against the calls' `created_at`, stamped by Bolna's clock."""
        now = self.client.now()
        state = SyncState(self.state, job, now)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix=f"{job}-read-ahead") as ahead:
                run = _Run(job, writer, recorder, state, now, ahead)
                for agent_id in self.agents():
                    if self.stop.is_set():
                        recorder.error("stopped before every agent was synced; the next run resumes",
                                       code="interrupted")
                        return
                    start = (now - self.backfill if full
                             else state.read_from(agent_id, overlap=self.overlap, backfill=self.backfill))
                    try:
                        self._follow_up(writer, recorder, agent_id, now, state)
                        self._sync_agent(run, agent_id, start)
                    except BolnaAuthError:
                        raise
                    except BolnaError as exc:
                        recorder.error(f"agent {agent_id}: {exc}", code="bolna_error", agent_id=agent_id)
        finally:
            state.save()

    def _read_page(self, run: _Run, agent_id: str, page: WindowPage) -> PageRead:
        items = [item for item in page if isinstance(item, dict)]
        return self.reader.read(page, run.writer.unchanged(items), run.recorder, agent_id)

    def _sync_agent(self, run: _Run, agent_id: str, start: datetime) -> None:
        writer, recorder, state, now = run.writer, run.recorder, run.state, run.now
        # One for all the windows of this run: a call to read again in an early window still holds
        # the cursor once a later window is done.
        progress = WindowProgress()
        pages = read_ahead(self.client.iter_pages(agent_id, start),
                           lambda page: self._read_page(run, agent_id, page), run.ahead,
                           keep_going=lambda: not self.stop.is_set())
        with closing(pages):
            for page, read in pages:
                if self.stop.is_set():
                    recorder.error(f"agent {agent_id}: stopped before the sync finished; the next run resumes",
                                   code="interrupted", agent_id=agent_id)
                    return
                recorder.add("fetched", len(page), agent_id)
                recorder.add("unchanged", read.unchanged, agent_id)
                for call_id, created_at in read.retry:
                    progress.unfinished(call_id, created_at, now)
                for execution in read.executions:
                    if not execution.terminal:
                        recorder.add("pending", 1, agent_id)
                        progress.unfinished(execution.id, execution.created_at, now)
                if read.executions and not self._write(writer, read.executions, recorder, agent_id):
                    for execution in read.executions:
                        progress.unfinished(execution.id, execution.created_at, now)
                if page.last:
                    state.window_done(agent_id, page.read_through, progress)

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
            recorder.error(f"call {call_id} is still not stored final after {PENDING_MAX_AGE.days} days; "
                           "no longer followed", code="pending_expired", call_id=call_id, agent_id=agent_id)
        finished: list[Execution] = []
        for call_id in plan.fetch:
            checked = Followed(pending[call_id].created_at, now)
            try:
                execution = self.reader.fetch(call_id)
            except BolnaAuthError:
                raise
            except (BolnaError, MalformedExecution) as exc:
                recorder.error(f"pending call {call_id}: {exc}", code="bolna_error", call_id=call_id,
                               agent_id=agent_id)
                if isinstance(exc, BolnaError) and exc.retryable:
                    still[call_id] = checked
                continue
            if execution.terminal:
                execution.agent_id = execution.agent_id or agent_id
                finished.append(execution)
            else:
                still[call_id] = checked
        if finished:
            if self._write(writer, finished, recorder, agent_id):
                recorder.add("pendingFinished", len(finished), agent_id)
            else:
                still.update({execution.id: Followed(pending[execution.id].created_at, now) for execution in finished})
        state.set_pending(agent_id, still)

    @staticmethod
    def _write(writer: PageWriter, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> bool:
        """Write one page; False (an error on the run) when the database refuses it."""
        try:
            writer.write(executions, recorder, agent_id)
        except PAGE_REFUSALS as exc:
            ids = ", ".join(execution.id for execution in executions[:20])
            recorder.error(f"agent {agent_id}: a page of {len(executions)} call(s) was refused by the database "
                           f"({describe_failure(exc)}); it is read again by a later run: {ids}",
                           code="page_write_failed", agent_id=agent_id)
            return False
        return True
