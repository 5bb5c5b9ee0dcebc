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
        admitted = [e for e in executions if e.customer_phone is None or e.customer_phone.key not in barred]
        recorder.add("suppressed", len(executions) - len(admitted), agent_id)
        return admitted

    def recheck(self, executions: list[Execution]) -> None:
        phones = _phones(executions)
        for key in self.suppressions.suppressed(phones):
            log.info("a number was erased while a page holding it was written; erased again",
                     extra={"event": "erased_during_write"})
            self.eraser.sweep(phones[key])


def _phones(executions: list[Execution]) -> dict[str, Phone]:
    return {e.customer_phone.key: e.customer_phone for e in executions if e.customer_phone is not None}
