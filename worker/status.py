"""`main.py status`: what the daemon did and what waits — read from the collections it writes,
so it works from any machine that reaches the database, daemon running or not."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from pymongo.database import Database

from services.analyzer.claims import CallQueue
from services.database import CALLS, CONTACTS, CUSTOMERS
from services.run_records import RunRecords
from utils.clock import utcnow
from utils.table import format_table
from worker.jobs import CALL_PROCESSOR, JOB_NAMES

LLM_USAGE_COUNTERS = ("analyzed", "failed", "promptTokens", "completionTokens", "costUsd", "unpricedAnalyses")
LLM_USAGE_WINDOW = timedelta(hours=24)


class StatusReader:
    def __init__(self, db: Database, database_name: str, runs: RunRecords, queue: CallQueue):
        self.db = db
        self.database_name = database_name
        self.runs = runs
        self.queue = queue

    def collect(self) -> dict:
        now = utcnow()
        return {
            "database": self.database_name,
            "checkedAt": now,
            "jobs": {job: self._job(job, now) for job in JOB_NAMES},
            "queueDepth": self.queue.depth(),
            "llmUsage24h": self.runs.totals(CALL_PROCESSOR, now - LLM_USAGE_WINDOW, LLM_USAGE_COUNTERS),
            "totals": {name: self.db[name].count_documents({}) for name in (CUSTOMERS, CALLS, CONTACTS)},
            "contactsByTag": self._count_by("tag"),
            "contactsByLeadStatus": self._count_by("leadStatus"),
        }

    def show(self, as_json: bool) -> int:
        status = self.collect()
        print(json.dumps(status, default=_json_value) if as_json else format_status(status))
        return 0

    def _job(self, job: str, now: datetime) -> dict:
        last = self.runs.last_run(job)
        success = self.runs.last_success(job)
        success_at = success.get("finishedAt") if success else None
        return {
            "lastRun": _run_summary(last) if last else None,
            "lastSuccessAt": success_at,
            "lastSuccessAgeSeconds": round((now - success_at).total_seconds()) if success_at else None,
        }

    def _count_by(self, field: str) -> dict[str, int]:
        """Contacts per value of `field`, most common first; contacts without it count under "none"."""
        groups = self.db[CONTACTS].aggregate([{"$group": {"_id": f"${field}", "count": {"$sum": 1}}}])
        counts = {str(group["_id"]) if group["_id"] is not None else "none": group["count"] for group in groups}
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def format_status(status: dict) -> str:
    job_rows = []
    for job, state in status["jobs"].items():
        last = state["lastRun"] or {}
        job_rows.append([job, last.get("status", "never run"), last.get("startedAt"), last.get("finishedAt"),
                         last.get("errorCount"), state["lastSuccessAt"], _age(state["lastSuccessAgeSeconds"])])
    totals = status["totals"]
    sections = [
        f"callsync status of database {status['database']!r} at {status['checkedAt']:%Y-%m-%d %H:%M:%S} UTC",
        format_table(["job", "last run", "started", "finished", "errors", "last success", "age"], job_rows),
        f"customers {totals[CUSTOMERS]}   calls {totals[CALLS]}   contacts {totals[CONTACTS]}   "
        f"waiting for analysis {status['queueDepth']}",
        _llm_usage(status["llmUsage24h"]),
        format_table(["tag", "contacts"], _count_rows(status["contactsByTag"])),
        format_table(["lead status", "contacts"], _count_rows(status["contactsByLeadStatus"])),
    ]
    return "\n\n".join(sections)


def _llm_usage(usage: dict) -> str:
    cost = f"${usage['costUsd']:.4f}"
    if usage["unpricedAnalyses"]:
        cost += f" (+ {usage['unpricedAnalyses']} analyses of a model without a price; see LLM_PRICES)"
    return (f"LLM, last 24 h: {usage['analyzed']} analyzed, {usage['failed']} failed, "
            f"{usage['promptTokens']} prompt + {usage['completionTokens']} completion tokens, "
            f"estimated cost {cost}")


def _run_summary(run: dict) -> dict:
    return {"id": run["_id"], "status": run["status"], "startedAt": run.get("startedAt"),
            "finishedAt": run.get("finishedAt"), "counts": run.get("counts", {}),
            "errorCount": run.get("errorCount", 0)}


def _count_rows(counts: dict[str, int]) -> list[list]:
    return [[name, count] for name, count in counts.items()] or [["(no contacts)", 0]]


def _age(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _json_value(value: object) -> str:
    if isinstance(value, datetime):  # stored times are naive UTC
        return value.isoformat(timespec="milliseconds") + "Z"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
