"""The inbox's processor: a thread of the daemon that claims accepted deliveries and writes them
through the poll's own writers (calls, then customers), so the analysis queue, the CRM rules, the
order-safe call write and the suppression list apply to webhooks exactly as to the poll.

Woken when the listener accepts a delivery, and every POLL_SECONDS anyway (a delivery another
replica accepted, or one a dead processor left claimed until its lease expired).

With many accounts, one processor serves them all: a batch is split by the account each delivery
came for, and each part is written through that account's writers (its view of the database, its
phone region)."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from itertools import groupby
from typing import Callable

from pymongo.errors import PyMongoError

from models.execution import Execution, MalformedExecution, parse_execution
from services.execution_feed import PAGE_REFUSALS
from services.run_records import RunRecorder, describe_failure
from services.webhooks.inbox import MAX_ATTEMPTS, Delivery, Inbox, Processed
from services.webhooks.tally import DeliveryTally
from services.writers import CallWriter, CustomerWriter
from utils.clock import utcnow

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
LEASE_SECONDS = 60.0  # a batch is written in well under a second; a claim this old is a dead processor's
BATCH = 200  # deliveries per claim: one batched write per collection for all of them
RETRY_AFTER_FAILURE_SECONDS = 2.0
JOB = "webhooks"
NOT_LISTED = "the account is no longer listed (TENANTS_FILTER); not written"


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

    def stop(self, timeout: float = 30.0) -> None:
        """After the batch in hand is written; a batch cut off is taken over once its lease expires."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.tally.flush(force=True)
        except PyMongoError:
            pass  # counted by the tally's own warning; the process is ending

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
        for _, group in groupby(by_account, key=lambda delivery: delivery.user_id):
            part = list(group)
            try:
                outcomes += self._process(part)
            except PyMongoError:
                # Lost on the way: this account's part and those after it go back to the queue;
                # what was written before is closed.
                written = {outcome.entry_id for outcome in outcomes}
                self.inbox.release(token, [d.entry_id for d in deliveries if d.entry_id not in written])
                self.inbox.finish(token, outcomes)
                self._count(outcomes)
                raise
        self.inbox.finish(token, outcomes)
        self._count(outcomes)
        return len(deliveries)

    def _process(self, deliveries: list[Delivery]) -> list[Processed]:
        """One account's deliveries of the batch."""
        writers = self.writers_for(deliveries[0].user_id)
        if writers is None:
            return [Processed(delivery.entry_id, error=NOT_LISTED) for delivery in deliveries]
        outcomes, executions = self._read(deliveries, writers.region)
        try:
            self._write(writers, latest_states(list(executions.values())))
        except PAGE_REFUSALS as exc:
            # The database refused this data (not a lost connection): each delivery alone, so
            # one bad record does not fail the others.
            log.warning("a batch of %d webhook deliveries was refused (%s); written one by one",
                        len(executions), describe_failure(exc), extra={"event": "webhook_batch_refused"})
            return outcomes + self._write_each(writers, executions)
        written_at = utcnow()
        return outcomes + [Processed(entry_id, lag_ms=_lag_ms(execution, written_at))
                           for entry_id, execution in executions.items()]

    @staticmethod
    def _read(deliveries: list[Delivery], region: str) -> tuple[list[Processed], dict[object, Execution]]:
        failed: list[Processed] = []
        executions: dict[object, Execution] = {}
        for delivery in deliveries:
            if delivery.attempts > MAX_ATTEMPTS:
                failed.append(Processed(delivery.entry_id, error=f"cut off {MAX_ATTEMPTS} times; left to the poll"))
                continue
            try:
                executions[delivery.entry_id] = parse_execution(json.loads(delivery.body), region)
            except (ValueError, MalformedExecution) as exc:  # accepted by an older version's checks
                failed.append(Processed(delivery.entry_id, error=f"unreadable: {type(exc).__name__}"))
        return failed, executions

    @staticmethod
    def _write(writers: AccountWriters, executions: list[Execution]) -> None:
        recorder = RunRecorder(JOB)
        ordered = sorted(executions, key=lambda execution: execution.agent_id or "")
        for agent_id, group in groupby(ordered, key=lambda execution: execution.agent_id or ""):
            page = list(group)
            writers.calls.write(page, recorder, agent_id)
            writers.customers.write(page, recorder, agent_id)

    def _write_each(self, writers: AccountWriters, executions: dict[object, Execution]) -> list[Processed]:
        outcomes = []
        for entry_id, execution in executions.items():
            try:
                self._write(writers, [execution])
                outcomes.append(Processed(entry_id, lag_ms=_lag_ms(execution, utcnow())))
            except PAGE_REFUSALS as exc:
                outcomes.append(Processed(entry_id, error=f"refused by the database: {describe_failure(exc)}"))
        return outcomes

    def _count(self, outcomes: list[Processed]) -> None:
        failed = sum(1 for outcome in outcomes if outcome.error)
        self.tally.count("failed", failed)
        self.tally.count("processed", len(outcomes) - failed)
        for outcome in outcomes:
            if outcome.lag_ms is not None:
                self.tally.lag(outcome.lag_ms / 1000)


def latest_states(executions: list[Execution]) -> list[Execution]:
    """One execution per call: the furthest state among them (final over unfinished, then the
    newest), so a batch holding several deliveries of a call writes it once."""
    latest: dict[str, Execution] = {}
    for execution in executions:
        current = latest.get(execution.id)
        if current is None or _progress(execution) >= _progress(current):
            latest[execution.id] = execution
    return list(latest.values())


def _progress(execution: Execution) -> tuple:
    return execution.terminal, execution.updated_at is not None, execution.updated_at or execution.created_at


def _lag_ms(execution: Execution, written_at) -> int | None:
    if execution.updated_at is None:
        return None
    return max(0, round((written_at - execution.updated_at).total_seconds() * 1000))
