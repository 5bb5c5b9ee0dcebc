"""`main.py reanalyze`: put chosen calls back in the analysis queue on purpose."""
from __future__ import annotations

from datetime import datetime, timezone

from pymongo.database import Database

from services.storage import CALLS


def requeue(db: Database, *, call_id: str | None = None, since: datetime | None = None) -> int:
    """Mark one call (`call_id`) or every call from `since` on unprocessed with a fresh attempt
    budget; returns how many calls matched. A claim in progress is dropped, so the attempt
    holding it cannot write its now-outdated outcome. The previous analysis stays on the call
    until the new one replaces it. `analysisRound` counts the requeues, so that the new
    decision adds an activity instead of overwriting the earlier one."""
    if (call_id is None) == (since is None):
        raise ValueError("give exactly one of call_id or since")
    if call_id is not None:
        selector = {"callId": call_id}
    else:
        if since.tzinfo is not None:  # stored times are naive UTC
            since = since.astimezone(timezone.utc).replace(tzinfo=None)
        selector = {"callAt": {"$gte": since}}
    result = db[CALLS].update_many(selector, {"$set": {"processed": False, "attempts": 0},
                                              "$inc": {"analysisRound": 1},
                                              "$unset": {"claim": ""}})
    return result.matched_count
