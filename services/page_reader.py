"""Turns a listing page into the executions the writers need. Bolna's trimmed listing lacks the
transcript and numbers: a terminal call listed that way is fetched whole (`GET /executions/{id}`),
unless a writer already holds it final. A page's full records are fetched side by side (bounded
by `concurrency`, paced by the client), and once for both jobs (`SharedRecords`)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from models.execution import Execution, MalformedExecution, needs_full_record, parse_execution
from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError
from services.record_cache import SharedRecords
from services.run_records import RunRecorder
from utils.logging import in_log_context


@dataclass
class PageRead:
    executions: list[Execution] = field(default_factory=list)  # to write
    unchanged: int = 0  # stored final already: nothing to do
    # Calls whose full record failed in a way worth retrying (call id, created_at): a later run
    # must read them again. A refusal (404, 422) is not among them: it would be retried for ever.
    retry: list[tuple[str, datetime]] = field(default_factory=list)


class PageReader:
    def __init__(self, client: BolnaClient, region: str, records: SharedRecords | None = None,
                 concurrency: int = 1):
        self.client = client
        self.region = region
        self.records = records if records is not None else SharedRecords(client.get_execution, size=0, seconds=0)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="bolna-record") if concurrency > 1 else None
        # Until one full record came back, one request goes alone: a refused key then costs one
        # request, not a page's worth.
        self._key_accepted = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def fetch(self, call_id: str) -> Execution:
        """One call's full record, fresh (a follow-up asks whether it changed). Raises BolnaError
        or MalformedExecution."""
        return parse_execution(self.client.get_execution(call_id), self.region)

    def read(self, page: list, known: set[str], recorder: RunRecorder, agent_id: str) -> PageRead:
        """`known`: ids the writer already holds final. A bad item is an error on the run; the
        rest of the page is still read. A refused key stops everything (BolnaAuthError)."""
        read = PageRead()
        listed: list[tuple[Execution, bool]] = []  # (as listed, needs its full record)
        for item in page:
            try:
                execution = parse_execution(item, self.region)
            except MalformedExecution as exc:
                recorder.error(f"malformed execution: {exc}", code=exc.code, call_id=exc.call_id, agent_id=agent_id)
                continue
            if execution.id in known:
                read.unchanged += 1
            else:
                listed.append((execution, needs_full_record(item)))
        fetched = self._fetch_all([execution for execution, needed in listed if needed])
        for execution, needed in listed:
            try:
                if needed:
                    execution = self._complete(execution, fetched[execution.id])
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
        """Each call's full record (or its failure), by id; a refused key is raised at once."""
        results: dict[str, Future] = {}
        for execution in listed:
            if execution.id in results:
                continue
            if self._pool is None or not self._key_accepted:
                results[execution.id] = _done(self._get, execution)
                if isinstance(results[execution.id].exception(), BolnaAuthError):
                    raise results[execution.id].exception()
            else:
                results[execution.id] = self._pool.submit(in_log_context(self._get, execution))
        for future in results.values():
            if isinstance(future.exception(), BolnaAuthError):
                for other in results.values():
                    other.cancel()
                raise future.exception()
        return results

    def _get(self, execution: Execution) -> dict:
        try:
            record = self.records.get(execution.id, execution.status)
        except BolnaError as exc:
            # Any answer but a refusal of the key says the key is good.
            self._key_accepted = self._key_accepted or (exc.status is not None and not isinstance(exc, BolnaAuthError))
            raise
        self._key_accepted = True
        return record

    def _complete(self, listed: Execution, outcome: Future) -> Execution:
        full = parse_execution(outcome.result(), self.region)
        if full.id != listed.id:
            raise MalformedExecution(f"GET /executions/{listed.id} returned id {full.id}", listed.id)
        return full


def _done(function, *args) -> Future:
    """`function(*args)` run here, as a finished Future (its result or its exception)."""
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the caller with the others' outcomes
        future.set_exception(exc)
    return future
