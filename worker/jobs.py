"""The daemon's jobs, declared once: the scheduler, the CLI's choices, `AccountApp.run_job` and
the cursors in `sync_state` all take their names from `JOBS`. A job's body is handed the account's
app (worker/app.py, which imports this module: so it is not named here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from services.run_records import RunRecorder

CRM_SYNC = "crm_sync"
CALL_PROCESSOR = "call_processor"


@dataclass(frozen=True)
class Job:
    name: str
    summary: str
    run: Callable[[object, RunRecorder, bool], None]  # (the account's app, recorder, full)


def _sync_customers(app, recorder: RunRecorder, full: bool) -> None:
    app.feed.run(CRM_SYNC, app.customer_writer, recorder, full=full)


def _process_calls(app, recorder: RunRecorder, full: bool) -> None:
    try:
        app.feed.run(CALL_PROCESSOR, app.call_writer, recorder, full=full)
    finally:
        try:
            # Calls stored by earlier runs are still worth analyzing when Bolna is down.
            app.analyze(recorder)
        finally:
            # Retention is this job's last pass: the job that writes `calls` also ages them out,
            # after its own analysis, whether Bolna or the LLM answered or not (docs/privacy.md).
            app.retention.run(recorder)


JOBS = {job.name: job for job in (
    Job(CRM_SYNC, "Bolna executions -> customers", _sync_customers),
    Job(CALL_PROCESSOR, "Bolna executions -> calls, then LLM analysis -> contacts, then retention",
        _process_calls),
)}
JOB_NAMES = tuple(JOBS)


@dataclass(frozen=True)
class ScheduledJob:
    """What the daemon runs on an interval: each job (one account), or the accounts' pass (many)."""
    name: str
    run: Callable[[], object]
    seconds: float
