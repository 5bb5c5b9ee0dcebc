"""What the sync writers ask of the suppression list around each page: before the write, which
executions are of erased numbers (left out, counted `suppressed`); after it, whether a number of
the page was erased while the page was being written (a `forget` running now), in which case the
number is swept again. `forget` adds its entry before it sweeps, so of its sweep and this one, at
least one runs after the page's write."""
from __future__ import annotations

import logging

from models.execution import Execution
from services.privacy.erasure import Eraser
from services.privacy.suppressions import SuppressionList
from services.run_records import RunRecorder
from utils.phone import Phone

log = logging.getLogger(__name__)


class PrivacyGuard:
    def __init__(self, suppressions: SuppressionList, eraser: Eraser):
        self.suppressions = suppressions
        self.eraser = eraser

    def admit(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> list[Execution]:
        """The executions that may be written: none of an erased number."""
        barred = self.suppressions.suppressed(_phones(executions))
        if not barred:
            return executions
        admitted = [e for e in executions if not any(phone.key in barred for phone in _numbers(e))]
        recorder.add("suppressed", len(executions) - len(admitted), agent_id)
        return admitted

    def recheck(self, executions: list[Execution]) -> None:
        phones = _phones(executions)
        for key in self.suppressions.suppressed(phones):
            log.info("a number was erased while a page holding it was written; erased again",
                     extra={"event": "erased_during_write"})
            self.eraser.sweep(phones[key])


def _phones(executions: list[Execution]) -> dict[str, Phone]:
    return {phone.key: phone for e in executions for phone in _numbers(e)}


def _numbers(execution: Execution) -> list[Phone]:
    """Both sides of the call, as `forget` finds them: the erased number may be either, the
    customer's or not (a call without `call_type` is taken as outbound)."""
    return [phone for phone in (execution.from_phone, execution.to_phone) if phone is not None]
