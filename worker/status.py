"""`main.py status`: what the daemon did and what waits, read from the collections it writes (so
from any machine that reaches the database, daemon running or not): one account's runs, queue and
contacts, or many accounts by state."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from pymongo.database import Database

from services import lease
from services.database import CALLS, CONTACTS, CUSTOMERS
from services.run_records import stale_after
from services.accounts.schedule import STATES
from utils.clock import utcnow
from utils.table import format_table
from worker.app import CALL_PROCESSOR, JOB_NAMES, Runtime

LLM_USAGE_COUNTERS = ("analyzed", "failed", "promptTokens", "completionTokens", "costUsd", "unpricedAnalyses")
LLM_USAGE_WINDOW = timedelta(hours=24)
WEBHOOK_WINDOW = timedelta(hours=24)


def collect(runtime: Runtime, limit: int = 50) -> dict:
    """One account's status, or many accounts' (at most `limit` of them listed)."""
    if runtime.account is None:
        overview = runtime.schedule.overview(limit=limit)
        return {"checkedAt": utcnow(), "accounts": overview["counts"], "total": overview["total"],
                "listed": [_account_row(row) for row in overview["accounts"]]}
    db, runs, now = runtime.db, runtime.account.runs, utcnow()
    stale = stale_after(runtime.settings.sync_interval_minutes)
    lags = runtime.inbox.lags_since(now - WEBHOOK_WINDOW)
    return {
        "database": runtime.settings.mongodb_db,
        "checkedAt": now,
        "jobs": {job: _job(runs.last_run(job, stale), runs.last_success(job), now) for job in JOB_NAMES},
        "queueDepth": runtime.account.call_queue.depth(),
        "llmUsage24h": runs.totals(CALL_PROCESSOR, now - LLM_USAGE_WINDOW, LLM_USAGE_COUNTERS),
        "totals": {name: db[name].count_documents({}) for name in (CUSTOMERS, CALLS, CONTACTS)},
        "contactsByTag": _count_by(db, "tag"),
        "contactsByLeadStatus": _count_by(db, "leadStatus"),
        "webhooks24h": {"deliveries": runtime.deliveries.totals(now - WEBHOOK_WINDOW),
                        "waiting": runtime.inbox.waiting(),
                        "lagMs": {"count": len(lags), "p50": _percentile(lags, 0.5), "p99": _percentile(lags, 0.99)}},
    }


def _job(last: dict | None, success: dict | None, now: datetime) -> dict:
    success_at = success.get("finishedAt") if success else None
    summary = {"id": last["_id"], "status": last["status"], "startedAt": last.get("startedAt"),
               "finishedAt": last.get("finishedAt"), "counts": last.get("counts", {}),
               "errorCount": last.get("errorCount", 0)} if last else None
    return {
        "lastRun": summary,
        "lastSuccessAt": success_at,
        "lastSuccessAgeSeconds": round((now - success_at).total_seconds()) if success_at else None,
    }


def _count_by(db: Database, field: str) -> dict[str, int]:
    """Contacts per value of `field`, most common first; contacts without it count under "none"."""
    groups = db[CONTACTS].aggregate([{"$group": {"_id": f"${field}", "count": {"$sum": 1}}}])
    counts = {str(group["_id"]) if group["_id"] is not None else "none": group["count"] for group in groups}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def show(status: dict, as_json: bool) -> int:
    formatted = format_fleet if "accounts" in status else format_status
    print(to_json(status) if as_json else formatted(status))
    return 0


def to_json(value: object) -> str:
    """`--json` output (`status`, `review`)."""
    return json.dumps(value, default=_json_value)


def _json_value(value: object) -> str:
    if isinstance(value, datetime):  # stored times are naive UTC
        return value.isoformat(timespec="milliseconds") + "Z"
    return str(value)  # ObjectId


def format_status(status: dict) -> str:
    job_rows = []
    for job, state in status["jobs"].items():
        last, age = state["lastRun"] or {}, state["lastSuccessAgeSeconds"]
        if age is not None:
            minutes, secs = divmod(age, 60)
            hours, minutes = divmod(minutes, 60)
            age = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
        job_rows.append([job, last.get("status", "never run"), last.get("startedAt"), last.get("finishedAt"),
                         last.get("errorCount"), state["lastSuccessAt"], age])
    totals, usage, webhooks = status["totals"], status["llmUsage24h"], status["webhooks24h"]
    cost = f"${usage['costUsd']:.4f}"
    if usage["unpricedAnalyses"]:
        cost += f" (+ {usage['unpricedAnalyses']} analyses of a model without a price; see LLM_PRICES)"
    delivered = ", ".join(f"{n} {outcome}" for outcome, n in webhooks["deliveries"].items() if n) or "none"
    lag = webhooks["lagMs"]
    delay = (f"; from Bolna's updated_at to the write: p50 {lag['p50'] / 1000:.1f} s, p99 {lag['p99'] / 1000:.1f} s "
             f"over {lag['count']}" if lag["count"] else "")
    sections = [
        f"callsync status of database {status['database']!r} at {status['checkedAt']:%Y-%m-%d %H:%M:%S} UTC",
        format_table(["job", "last run", "started", "finished", "errors", "last success", "age"], job_rows),
        f"customers {totals[CUSTOMERS]}   calls {totals[CALLS]}   contacts {totals[CONTACTS]}   "
        f"waiting for analysis {status['queueDepth']}",
        f"LLM, last 24 h: {usage['analyzed']} analyzed, {usage['failed']} failed, "
        f"{usage['promptTokens']} prompt + {usage['completionTokens']} completion tokens, estimated cost {cost}",
        f"webhooks, last 24 h: {delivered}; waiting {webhooks['waiting']}{delay}",
        format_table(["tag", "contacts"], _count_rows(status["contactsByTag"])),
        format_table(["lead status", "contacts"], _count_rows(status["contactsByLeadStatus"])),
    ]
    return "\n\n".join(sections)


def format_fleet(status: dict) -> str:
    counts = "   ".join(f"{state} {status['accounts'].get(state, 0)}" for state in STATES)
    rows = [list(row.values()) for row in status["listed"]]  # in the columns' order (`_account_row`)
    return "\n\n".join([
        f"callsync accounts at {status['checkedAt']:%Y-%m-%d %H:%M:%S} UTC: {status['total']} in the schedule",
        counts,
        format_table(["account", "state", "due", "running on", "last run", "finished", "errors", "refused"],
                     rows or [["(no accounts)", "", "", "", "", "", "", ""]]),
    ])


def _account_row(row: dict) -> dict:
    """Ids, states and times only: never a key (the schedule holds none, only its fingerprint)."""
    last = row.get("lastRun") or {}
    refused = row.get("refused") or {}
    return {"account": str(row["accountId"]), "state": row.get("state"), "dueAt": row.get("dueAt"),
            "runningOn": row.get(lease.BY), "lastStatus": last.get("status"),
            "lastFinishedAt": last.get("finishedAt"), "errors": last.get("errors"),
            "refused": f"{refused['reason']} (since {refused['since']:%Y-%m-%d %H:%M})" if refused else None}


def _percentile(ordered: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.999999) - 1))]


def _count_rows(counts: dict[str, int]) -> list[list]:
    return [[name, count] for name, count in counts.items()] or [["(no contacts)", 0]]
