"""`main.py status` with many accounts: the accounts by state (running, due, waiting, refused,
retired), and the ones due longest with the replica syncing them, their last result and errors.
One account's own status (its runs, queue and contacts): `main.py status --account ID`."""
from __future__ import annotations

import json

from services import lease
from services.tenancy.schedule import STATES, TenantSchedule
from utils.clock import utcnow
from utils.table import format_table
from worker.status import _json_value


def collect_fleet(schedule: TenantSchedule, limit: int) -> dict:
    overview = schedule.overview(limit=limit)
    return {"checkedAt": utcnow(), "accounts": overview["counts"], "total": overview["total"],
            "listed": [_row(row) for row in overview["tenants"]]}


def show_fleet(schedule: TenantSchedule, *, as_json: bool, limit: int = 50) -> int:
    status = collect_fleet(schedule, limit)
    print(json.dumps(status, default=_json_value) if as_json else format_fleet(status))
    return 0


def format_fleet(status: dict) -> str:
    counts = "   ".join(f"{state} {status['accounts'].get(state, 0)}" for state in STATES)
    rows = [[row["account"], row["state"], row["dueAt"], row["runningOn"], row["lastStatus"], row["lastFinishedAt"],
             row["errors"], row["refused"]] for row in status["listed"]]
    return "\n\n".join([
        f"callsync accounts at {status['checkedAt']:%Y-%m-%d %H:%M:%S} UTC: {status['total']} in the schedule",
        counts,
        format_table(["account", "state", "due", "running on", "last run", "finished", "errors", "refused"],
                     rows or [["(no accounts)", "", "", "", "", "", "", ""]]),
    ])


def _row(row: dict) -> dict:
    """Ids, states and times only: never a key (the schedule holds none, only its fingerprint)."""
    last = row.get("lastRun") or {}
    refused = row.get("refused") or {}
    return {"account": str(row["tenantId"]), "state": row.get("state"), "dueAt": row.get("dueAt"),
            "runningOn": row.get(lease.BY), "lastStatus": last.get("status"),
            "lastFinishedAt": last.get("finishedAt"), "errors": last.get("errors"),
            "refused": f"{refused['reason']} (since {refused['since']:%Y-%m-%d %H:%M})" if refused else None}
