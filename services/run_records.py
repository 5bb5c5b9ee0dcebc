"""Run records: what one job run did (counts and per-record errors, `RunRecorder`), and the
`sync_runs` collection that keeps them, one document per run (`RunRecords`)."""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Callable

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, PyMongoError

from services.database import JOB_STARTED_INDEX, RUN_INDEX_KEYS, SYNC_RUNS
from utils.clock import utcnow
from utils.logging import Listeners, log_context, redact

MAX_ERRORS = 100  # a run over a broken feed must not grow a 16 MB document

log = logging.getLogger(__name__)


class FatalError(Exception):
    """No retry gets past it (Singer SDK's FatalAPIError): the run stops, its record naming the
    failure by the type's `run_error_code` (`failed_with` reads it)."""
    run_error_code = "run_failed"


def failed_with(run: dict, error: type[FatalError]) -> bool:
    return any(entry.get("code") == error.run_error_code for entry in run.get("errors", ()))


def describe_failure(failure: BaseException) -> str:
    """What a failed run records and logs. A driver error's text quotes the documents it failed
    on (transcripts, numbers, e-mails), so of those only the type and code are kept."""
    if isinstance(failure, PyMongoError):
        code = getattr(failure, "code", None)
        return type(failure).__name__ + (f" (code {code})" if code is not None else "")
    return f"{type(failure).__name__}: {failure}"


class RunRecorder:
    """A run's counts (`counts`, and per agent in `agents`) and errors, which make it `partial`.
    Threads reporting side by side take one lock per report."""

    def __init__(self, job: str):
        self.job = job
        self.run_id = uuid.uuid4().hex
        self.started_at = utcnow()
        self.finished_at: datetime | None = None
        self.status = "running"
        self.counts: Counter = Counter()
        self.agents: defaultdict[str, Counter] = defaultdict(Counter)
        self.errors: list[dict] = []  # the first MAX_ERRORS; counts["errors"] counts them all
        self._lock = threading.Lock()

    def add(self, counter: str, n: float = 1, agent_id: str | None = None) -> None:
        if not n:
            return
        with self._lock:
            self.counts[counter] += n
            if agent_id is not None:
                self.agents[agent_id][counter] += n

    def error(self, message: str, *, code: str, call_id: str | None = None,
              agent_id: str | None = None, exc_info: BaseException | None = None) -> None:
        """Record an error on the run and log it once (with the traceback of `exc_info`, if given)."""
        log.warning("%s", message, exc_info=exc_info, extra={"job": self.job, "run_id": self.run_id, "event": code,
                                                             "call_id": call_id, "agent_id": agent_id})
        self._record_error(message, code, call_id, agent_id)

    def _record_error(self, message: str, code: str, call_id: str | None = None,
                      agent_id: str | None = None) -> None:
        # Run records are read by other programs: the same masking as the logs.
        entry = {"code": code, "message": redact(message)[:500]}
        if call_id is not None:
            entry["callId"] = call_id
        if agent_id is not None:
            entry["agentId"] = agent_id
        with self._lock:
            self.counts["errors"] += 1
            if agent_id is not None:
                self.agents[agent_id]["failed"] += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(entry)

    def finish(self, failure: BaseException | None = None) -> None:
        self.finished_at = utcnow()
        if failure is not None:
            self.status = "failed"
            # A fatal error names its own code (a refused key sets its account aside). Recorded, not
            # logged again: RunRecords logged the failure once, with its traceback.
            code = failure.run_error_code if isinstance(failure, FatalError) else FatalError.run_error_code
            self._record_error(describe_failure(failure), code)
        else:
            self.status = "partial" if self.counts["errors"] else "ok"

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
            "errorCount": self.counts["errors"],
        }


RunListener = Callable[[dict], None]
SUCCESSFUL = ("ok", "partial")  # a partial run did its work; only some records were refused


def stale_after(sync_interval_minutes: float) -> timedelta:
    """How long a run can be `running` while its process lives: older, it is dead (abandoned)."""
    return max(timedelta(hours=1), 3 * timedelta(minutes=sync_interval_minutes))


class UnsettledRuns:
    """Final run records this process could not write (MongoDB away), written once it answers. One
    for the process (`UNSETTLED`), so the next run of any account settles what an earlier one left."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Collection, dict]] = {}

    def keep(self, runs: Collection, run_id: str, fields: dict) -> None:
        with self._lock:
            self._pending[run_id] = (runs, fields)

    def settle(self) -> None:
        """Write what is kept; stops at the first connection failure (MongoDB still away)."""
        with self._lock:
            pending = list(self._pending.items())
        for run_id, (runs, fields) in pending:
            context = {"job": fields.get("job"), "run_id": run_id}
            try:
                # The outcome this process saw is the truth, even over an `abandoned` set meanwhile.
                runs.update_one({"_id": run_id}, {"$set": fields})
                log.info("run record settled: %s", fields["status"], extra={**context, "event": "run_record_settled"})
            except ConnectionFailure:
                break
            except PyMongoError as exc:  # refused for good: the next start marks it abandoned
                log.warning("run record not settled: %s", describe_failure(exc),
                            extra={**context, "event": "run_record_failed"})
            with self._lock:
                self._pending.pop(run_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


UNSETTLED = UnsettledRuns()


class RunRecords:
    def __init__(self, db: Database):
        self.runs = db[SYNC_RUNS]
        self.unsettled = UNSETTLED
        # Each sees every finished run's record (from the job's thread), `RunListener`s.
        self.finished = Listeners("run_listener_failed")
        self.subscribe = self.finished.subscribe

    def record(self, job: str, body: Callable[[RunRecorder], None]) -> dict:
        """Run `body` under a run record. Its exceptions are recorded, not raised: one job's
        failure must never stop the other job or the daemon."""
        recorder = RunRecorder(job)
        with log_context(job=job, run_id=recorder.run_id):
            self.unsettled.settle()
            try:
                self.runs.insert_one({**recorder.document(), "host": socket.gethostname(), "pid": os.getpid()})
            except Exception as exc:  # noqa: BLE001 - MongoDB is unreachable: the job could not write either
                log.error("could not start the run record; run skipped: %s", describe_failure(exc),
                          extra={"event": "run_failed"})
                recorder.finish(exc)
                self.finished(document := recorder.document())
                return document
            log.info("run started", extra={"event": "run_started"})
            failure = None
            try:
                body(recorder)
            except Exception as exc:  # noqa: BLE001 - recorded on the run, logged with its traceback
                failure = exc
                # A traceback for bugs; a database error's text would quote document values.
                log.error("run failed: %s", describe_failure(exc), exc_info=not isinstance(exc, PyMongoError),
                          extra={"event": "run_failed"})
            recorder.finish(failure)
            document = recorder.document()
            fields = {k: v for k, v in document.items() if k != "_id"}
            try:
                self.runs.update_one({"_id": recorder.run_id}, {"$set": fields})
            except PyMongoError as exc:
                # MongoDB away: written once it answers, or else marked abandoned at the next start.
                self.unsettled.keep(self.runs, recorder.run_id, fields)
                log.warning("could not store the run record; kept to be written when MongoDB answers: %s",
                            describe_failure(exc), extra={"event": "run_record_failed"})
            except Exception:  # noqa: BLE001 - the run's own work is done; losing its record must not crash
                log.exception("could not store the run record", extra={"event": "run_record_failed"})
            log.info("run finished: %s", document["status"],
                     extra={"event": "run_finished", "status": document["status"], "counts": document["counts"]})
            self.finished(document)
            return document

    def last_run(self, job: str, stale: timedelta | None = None) -> dict | None:
        """The last run of `job`; with `stale`, one still `running` whose process is dead (on this
        host) or that is older than `stale` reads as `abandoned`, as the next start will mark it."""
        run = self.runs.find_one({"job": job}, sort=[("startedAt", DESCENDING)])
        if run is not None and stale is not None and run["status"] == "running":
            started, pid = run.get("startedAt"), run.get("pid")
            if (started is not None and started < utcnow() - stale) or (
                    run.get("host") == socket.gethostname() and pid != os.getpid() and not _alive(pid)):
                run = {**run, "status": "abandoned"}
        return run

    def last_success(self, job: str) -> dict | None:
        # `job_startedAt`, named: a planner that cannot use an index with a filter on a field
        # outside it (the test run's wire server) would scan; MongoDB picks it anyway.
        return self.runs.find_one({"job": job, "status": {"$in": list(SUCCESSFUL)}},
                                  sort=[("startedAt", DESCENDING)],
                                  hint=RUN_INDEX_KEYS)

    def totals(self, job: str, since: datetime, counters: tuple[str, ...]) -> dict[str, float]:
        sums = {name: {"$sum": f"$counts.{name}"} for name in counters}
        rows = list(self.runs.aggregate(
            [{"$match": {"job": job, "startedAt": {"$gte": since}}}, {"$group": {"_id": None, **sums}}],
            # By name: aggregate passes a hint through unconverted, and a list of keys is refused.
            hint=JOB_STARTED_INDEX))
        return {name: rows[0][name] if rows else 0 for name in counters}

    def mark_abandoned(self, stale_after: timedelta) -> int:
        """At start-up: runs still `running` that belong to a dead process of this host (or to an
        earlier life of this very pid, as in a restarted container), or that are older than any
        live run can be. Another daemon's live run on another host is left alone."""
        host, me = socket.gethostname(), os.getpid()
        dead = [pid for pid in self.runs.distinct("pid", {"status": "running", "host": host})
                if pid == me or not _alive(pid)]
        result = self.runs.update_many(
            {"status": "running",
             "$or": [{"host": host, "pid": {"$in": dead}}, {"startedAt": {"$lt": utcnow() - stale_after}}]},
            {"$set": {"status": "abandoned", "finishedAt": utcnow()}})
        return result.modified_count


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
