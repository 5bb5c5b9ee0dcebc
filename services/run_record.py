"""What one job run did: counts and per-record errors, kept as a document in `sync_runs`."""
from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone

from pymongo.errors import PyMongoError

from utils.logging import redact

MAX_ERRORS = 100  # a run over a broken feed must not grow a 16 MB document

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Naive UTC at millisecond precision: what MongoDB stores and pymongo returns."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def describe_failure(failure: BaseException) -> str:
    """What a failed run records and logs. A driver error's text quotes the documents it failed
    on (transcripts, numbers, e-mails), so of those only the type and code are kept."""
    if isinstance(failure, PyMongoError):
        code = getattr(failure, "code", None)
        return type(failure).__name__ + (f" (code {code})" if code is not None else "")
    return f"{type(failure).__name__}: {failure}"


class RunRecorder:
    """Collects a run's counts and errors. Counts are global (`counts`) and, when an agent
    is named, per agent (`agents`). Errors never stop the run; they make it `partial`."""

    def __init__(self, job: str):
        self.job = job
        self.run_id = uuid.uuid4().hex
        self.started_at = utcnow()
        self.finished_at: datetime | None = None
        self.status = "running"
        self.counts: Counter = Counter()
        self.agents: defaultdict[str, Counter] = defaultdict(Counter)
        self.errors: list[dict] = []
        self.error_count = 0

    def add(self, counter: str, n: int = 1, agent_id: str | None = None) -> None:
        if not n:
            return
        self.counts[counter] += n
        if agent_id is not None:
            self.agents[agent_id][counter] += n

    def error(self, message: str, *, code: str, call_id: str | None = None,
              agent_id: str | None = None) -> None:
        self.error_count += 1
        self.counts["errors"] += 1
        if agent_id is not None:
            self.agents[agent_id]["failed"] += 1
        log.warning("%s", message, extra={"job": self.job, "run_id": self.run_id, "event": code,
                                          "call_id": call_id, "agent_id": agent_id})
        if len(self.errors) < MAX_ERRORS:
            # Run records are read by other programs: the same masking as the logs.
            entry = {"code": code, "message": redact(message)[:500]}
            if call_id is not None:
                entry["callId"] = call_id
            if agent_id is not None:
                entry["agentId"] = agent_id
            self.errors.append(entry)

    def finish(self, failure: BaseException | None = None) -> None:
        self.finished_at = utcnow()
        if failure is not None:
            self.status = "failed"
            self.error(describe_failure(failure), code="run_failed")
        else:
            self.status = "partial" if self.error_count else "ok"

    def document(self) -> dict:
        return {
            "_id": self.run_id,
            "job": self.job,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "status": self.status,
            "counts": dict(self.counts),
            "agents": {agent: dict(counts) for agent, counts in self.agents.items()},
            "errors": self.errors,
            "errorCount": self.error_count,
        }
