"""Turns a listing page into the executions the writers need. Bolna's trimmed listing lacks the
transcript and numbers: a terminal call listed that way is fetched whole (`GET /executions/{id}`),
unless a writer already holds it final."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from models.execution import Execution, MalformedExecution, needs_full_record, parse_execution
from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError
from services.run_records import RunRecorder


@dataclass
class PageRead:
    executions: list[Execution] = field(default_factory=list)  # to write
    unchanged: int = 0  # stored final already: nothing to do
    # Calls whose full record failed in a way worth retrying (call id, created_at): a later run
    # must read them again. A refusal (404, 422) is not among them: it would be retried for ever.
    retry: list[tuple[str, datetime]] = field(default_factory=list)


class PageReader:
    def __init__(self, client: BolnaClient, region: str):
        self.client = client
        self.region = region

    def fetch(self, call_id: str) -> Execution:
        """One call's full record. Raises BolnaError or MalformedExecution."""
        return parse_execution(self.client.get_execution(call_id), self.region)

    def read(self, page: list, known: set[str], recorder: RunRecorder, agent_id: str) -> PageRead:
        """`known`: ids the writer already holds final. A bad item is an error on the run; the
        rest of the page is still read. A refused key stops everything (BolnaAuthError)."""
        read = PageRead()
        for item in page:
            try:
                listed = parse_execution(item, self.region)
            except MalformedExecution as exc:
                recorder.error(f"malformed execution: {exc}", code=exc.code, call_id=exc.call_id, agent_id=agent_id)
                continue
            if listed.id in known:
                read.unchanged += 1
                continue
            try:
                execution = self._complete(listed, item)
            except MalformedExecution as exc:
                recorder.error(f"malformed execution: {exc}", code=exc.code, call_id=exc.call_id, agent_id=agent_id)
                continue
            except BolnaAuthError:
                raise
            except BolnaError as exc:
                if exc.retryable:
                    read.retry.append((listed.id, listed.created_at))
                recorder.error(f"full record of {listed.id}: {exc}", code="bolna_error", call_id=listed.id,
                               agent_id=agent_id)
                continue
            execution.agent_id = execution.agent_id or agent_id
            read.executions.append(execution)
        return read

    def _complete(self, listed: Execution, item: dict) -> Execution:
        if not needs_full_record(item):
            return listed
        full = self.fetch(listed.id)
        if full.id != listed.id:
            raise MalformedExecution(f"GET /executions/{listed.id} returned id {full.id}", listed.id)
        return full
