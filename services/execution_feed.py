"""The page loop of both jobs: each agent's executions since its cursor (`services/sync_state.py`),
read one page ahead of the writes and handed to the job's writer (docs/architecture.md, "Follow
one call")."""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Container, Iterable, Iterator, Protocol

from bson.errors import InvalidDocument
from cachetools import TTLCache
from pymongo.database import Database
from pymongo.errors import DocumentTooLarge, OperationFailure

from models.execution import Execution, MalformedExecution, needs_full_record, parse_execution
from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError
from services.database import SYNC_STATE
from services.run_records import RunRecorder, describe_failure
from services.sync_state import PENDING_MAX_AGE, Followed, SyncState, WindowProgress, follow_ups
from utils.logging import in_log_context

# What the database says about one page's data (a document too large, a field of the wrong type in
# an old record): the page is refused, the run goes on. A lost connection is not among them: every
# later write would fail too, so it ends the run and the next run starts over.
PAGE_REFUSALS = (OperationFailure, DocumentTooLarge, InvalidDocument)


class PageWriter(Protocol):
    def stored(self, items: list[dict]) -> dict[str, bool]:
        """Ids among these raw list items that are already stored, each with whether it is
        stored final and needs no work."""

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str,
              stored_ids: Container[str] = ()) -> None:
        """Store one page (one batched write); `stored_ids`, where known, spares a write refused
        for a record already there."""


class ExecutionFeed:
    def __init__(self, db: Database, client: BolnaClient, reader: PageReader, *, agent_ids: Iterable[str],
                 backfill: timedelta, overlap: timedelta):
        self.state = db[SYNC_STATE]
        self.stop = client.stop  # set on SIGTERM: the sync ends after its current write
        self.client = client
        self.reader = reader
        self.agent_ids = tuple(agent_ids)
        self.backfill = backfill
        self.overlap = overlap

    def run(self, job: str, writer: PageWriter, recorder: RunRecorder, *, full: bool = False) -> None:
        """Sync every agent under `job`'s cursors; one agent's failure is recorded and the others
        still run. A refused API key stops the run: every further request would be refused too.
        Agents go one after another, so pages are written in the order Bolna lists them (a
        customer's status changes are recorded in that order). "Now" is Bolna's, as the cursor is:
        the ages of unfinished calls and the backfill are measured against Bolna's `created_at`."""
        now = self.client.now()
        state = SyncState(self.state, job, now)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix=f"{job}-read-ahead") as ahead:
                for agent_id in self.agent_ids or [str(agent["id"]) for agent in self.client.list_agents()]:
                    if self.stop.is_set():
                        recorder.error("stopped before every agent was synced; the next run resumes",
                                       code="interrupted")
                        return
                    start = (now - self.backfill if full
                             else state.read_from(agent_id, overlap=self.overlap, backfill=self.backfill))
                    try:
                        self._follow_up(writer, recorder, agent_id, now, state)
                        self._sync_agent(writer, recorder, state, now, ahead, agent_id, start)
                    except BolnaAuthError:
                        raise
                    except BolnaError as exc:
                        recorder.error(f"agent {agent_id}: {exc}", code="bolna_error", agent_id=agent_id)
        finally:
            state.save()

    def _sync_agent(self, writer: PageWriter, recorder: RunRecorder, state: SyncState, now: datetime,
                    ahead: ThreadPoolExecutor, agent_id: str, start: datetime) -> None:
        progress = WindowProgress()
        pages = read_ahead(self.client.iter_pages(agent_id, start),
                           lambda page: self.reader.read(page, writer, recorder, agent_id), ahead,
                           keep_going=lambda: not self.stop.is_set())
        with closing(pages):
            for page, read in pages:
                if self.stop.is_set():
                    recorder.error(f"agent {agent_id}: stopped before the sync finished; the next run resumes",
                                   code="interrupted", agent_id=agent_id)
                    return
                recorder.add("fetched", len(page), agent_id)
                recorder.add("unchanged", read.unchanged, agent_id)
                unwritten = [execution for execution in read.executions if not execution.terminal]
                recorder.add("pending", len(unwritten), agent_id)
                if read.executions and not self._write(writer, read.executions, recorder, agent_id,
                                                       read.stored_ids):
                    unwritten = read.executions
                for call_id, created_at in read.retry + [(e.id, e.created_at) for e in unwritten]:
                    progress.unfinished(call_id, created_at, now)
                if page.last:
                    state.window_done(agent_id, page.read_through, progress)

    def _follow_up(self, writer: PageWriter, recorder: RunRecorder, agent_id: str, now: datetime,
                   state: SyncState) -> None:
        """Fetch by id the calls the cursor passed while they were unfinished; write those that
        are final now, keep following the rest."""
        pending = state.pending(agent_id)
        plan = follow_ups(pending, now)
        for call_id in plan.expired:
            recorder.error(f"call {call_id} is still not stored final after {PENDING_MAX_AGE.days} days; "
                           "no longer followed", code="pending_expired", call_id=call_id, agent_id=agent_id)
        finished: list[Execution] = []
        unfinished: list[str] = []
        for call_id in plan.fetch:
            try:
                execution = parse_execution(self.client.get_execution(call_id), self.reader.region)
            except BolnaAuthError:
                raise
            except (BolnaError, MalformedExecution) as exc:
                recorder.error(f"pending call {call_id}: {exc}", code="bolna_error", call_id=call_id,
                               agent_id=agent_id)
                if isinstance(exc, BolnaError) and exc.retryable:
                    unfinished.append(call_id)
                continue
            if execution.terminal:
                execution.agent_id = execution.agent_id or agent_id
                finished.append(execution)
            else:
                unfinished.append(call_id)
        if finished:
            # A call followed by id was listed unfinished, and stored then by the call writer: sent
            # as stored (its update still inserts one whose page was refused).
            if self._write(writer, finished, recorder, agent_id, {execution.id for execution in finished}):
                recorder.add("pendingFinished", len(finished), agent_id)
            else:
                unfinished += [execution.id for execution in finished]
        state.set_pending(agent_id, {**plan.keep, **{call_id: Followed(pending[call_id].created_at, now)
                                                     for call_id in unfinished}})

    @staticmethod
    def _write(writer: PageWriter, executions: list[Execution], recorder: RunRecorder, agent_id: str,
               stored_ids: Container[str]) -> bool:
        """Write one page; False (an error on the run) when the database refuses it."""
        try:
            writer.write(executions, recorder, agent_id, stored_ids)
        except PAGE_REFUSALS as exc:
            ids = ", ".join(execution.id for execution in executions[:20])
            recorder.error(f"agent {agent_id}: a page of {len(executions)} call(s) was refused by the database "
                           f"({describe_failure(exc)}); it is read again by a later run: {ids}",
                           code="page_write_failed", agent_id=agent_id)
            return False
        return True


def read_ahead(pages: Iterator, read: Callable, worker: ThreadPoolExecutor,
               keep_going: Callable[[], bool]) -> Iterator[tuple]:
    """(page, read(page)) for each page; the next is read while the caller holds this one. Errors
    of listing or reading reach the caller in order. `keep_going()` false: nothing more is read.
    Closing the iterator waits for the read under way, so no request outlives the caller's loop."""
    def next_read() -> tuple | None:
        page = next(pages, None)
        return None if page is None else (page, read(page))

    pending: Future | None = worker.submit(in_log_context(next_read))
    try:
        while pending is not None:
            result = pending.result()
            pending = None
            if result is None:
                return
            if keep_going():
                pending = worker.submit(in_log_context(next_read))
            yield result
    finally:
        if pending is not None:
            pending.cancel() or pending.exception()  # not started, or waited for


@dataclass
class PageRead:
    executions: list[Execution] = field(default_factory=list)  # to write
    unchanged: int = 0  # stored final already: nothing to do
    stored_ids: set[str] = field(default_factory=set)  # stored already: written as an update
    # Calls whose full record failed in a way worth retrying (call id, created_at): a later run
    # must read them again. A refusal (404, 422) is not among them: it would be retried for ever.
    retry: list[tuple[str, datetime]] = field(default_factory=list)


class PageReader:
    def __init__(self, client: BolnaClient, region: str, records: SharedRecords, concurrency: int):
        self.client = client
        self.region = region
        self.records = records
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="bolna-record")
        # Until one full record came back, one request goes alone: a refused key then costs one
        # request, not a page's worth.
        self._key_accepted = False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def read(self, page: list, writer: PageWriter, recorder: RunRecorder, agent_id: str) -> PageRead:
        """A bad item is an error on the run; the rest of the page is still read. A refused key
        stops everything (BolnaAuthError)."""
        read = PageRead()
        stored = writer.stored([item for item in page if isinstance(item, dict)])
        listed: list[tuple[Execution, bool]] = []  # (as listed, needs its full record)
        for item in page:
            try:
                execution = parse_execution(item, self.region)
            except MalformedExecution as exc:
                recorder.error(f"malformed execution: {exc}", code=exc.code, call_id=exc.call_id, agent_id=agent_id)
                continue
            if stored.get(execution.id):
                read.unchanged += 1
            else:
                listed.append((execution, needs_full_record(item)))
        read.stored_ids = set(stored)
        fetched = self._fetch_all([execution for execution, needed in listed if needed])
        for execution, needed in listed:
            try:
                execution = fetched[execution.id].result() if needed else execution
            except MalformedExecution as exc:
                recorder.error(f"malformed execution: {exc}", code=exc.code, call_id=exc.call_id, agent_id=agent_id)
                continue
            except BolnaError as exc:
                if exc.retryable:
                    read.retry.append((execution.id, execution.created_at))
                if not self.client.stop.is_set():  # a stop is recorded once, by the feed
                    recorder.error(f"full record of {execution.id}: {exc}", code="bolna_error",
                                   call_id=execution.id, agent_id=agent_id)
                continue
            execution.agent_id = execution.agent_id or agent_id
            read.executions.append(execution)
        return read

    def _fetch_all(self, listed: list[Execution]) -> dict[str, Future]:
        """Each call's full record, read (or its failure), by id; a refused key is raised at once."""
        results: dict[str, Future] = {}
        for execution in listed:
            if execution.id not in results:
                future = results[execution.id] = self._pool.submit(in_log_context(self._full, execution))
                # Waited for until the key is known good (`_key_accepted`).
                if not self._key_accepted and isinstance(future.exception(), BolnaAuthError):
                    raise future.exception()
        for future in results.values():
            if isinstance(future.exception(), BolnaAuthError):
                for other in results.values():
                    other.cancel()
                raise future.exception()
        return results

    def _full(self, listed: Execution) -> Execution:
        try:
            record = self.records.get(listed.id, listed.status)
        except BolnaError as exc:
            # Any answer but a refusal of the key says the key is good.
            self._key_accepted = self._key_accepted or (exc.status is not None and not isinstance(exc, BolnaAuthError))
            raise
        self._key_accepted = True
        full = parse_execution(record, self.region)
        if full.id != listed.id:
            raise MalformedExecution(f"GET /executions/{listed.id} returned id {full.id}", listed.id)
        return full


class SharedRecords:
    """A call's full record fetched once, whichever job needs it first: kept for the other (`size`
    0: not kept) under its id and the status the listing showed, since a terminal call's record is
    final; when both want one at the same moment, the second waits for the first's request."""

    def __init__(self, fetch: Callable[[str], dict], *, size: int, seconds: float):
        self._fetch = fetch
        self._kept: TTLCache | None = TTLCache(maxsize=size, ttl=seconds) if size and seconds else None
        self._in_flight: dict[tuple[str, str], Future] = {}  # by (call id, status as listed)
        self._waited: set[tuple[str, str]] = set()  # in flight, and another job waits for it
        self._lock = threading.Lock()

    def get(self, call_id: str, status: str) -> dict:
        """The call's full record. Raises what the request raised (to every job waiting on it)."""
        key = (call_id, status)
        with self._lock:
            if self._kept is not None and key in self._kept:
                return self._kept.pop(key)  # each job reads a call once: the other one is done
            flight = self._in_flight.get(key)
            if flight is None:
                own = self._in_flight[key] = Future()
            else:
                self._waited.add(key)
        if flight is not None:
            return flight.result()
        failure: BaseException | None = None
        try:
            record = self._fetch(call_id)
        except BaseException as exc:  # handed to every waiter, then raised
            failure = exc
        with self._lock:
            del self._in_flight[key]
            if failure is None and key not in self._waited and self._kept is not None:
                self._kept[key] = record  # for the other job; a waiter has it already
            self._waited.discard(key)
        if failure is not None:
            own.set_exception(failure)
            raise failure
        own.set_result(record)
        return record
