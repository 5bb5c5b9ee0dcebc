"""The analysis queue on `calls`: claim the oldest unprocessed terminal call atomically, then
finish it (processed, with its analysis) or release it (back to the queue, attempt not counted);
`requeue` puts chosen calls back on purpose (`main.py reanalyze`). An analysis with a result is
`settle`d on the call under the claim's token before anything reaches the CRM, so the CRM follows
only a decision settled under a live claim, and a retake applies a settled decision instead of
asking again. A claim is a lease (services/lease.py): a process that died leaves its calls to the
next claim."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection

from services import lease
from services.database import CALL_ID_INDEX_KEYS, QUEUE_INDEX_KEYS
from utils.clock import naive_utc, utcnow

# The first attempt, and one more after a lease expired; a claim beyond this is not analyzed.
MAX_ATTEMPTS = 2
_CALL_FIELDS = ("callId", "agentId", "callAt", "transcript", "customerPhone", "customerPhoneValid", "attempts",
                "analysisRound", "settled", "analysis")
# Waiting for analysis: stored final, not analyzed yet (the `analysis_queue` index).
_WAITING = {"processed": False, "terminal": True}


@dataclass(frozen=True)
class Claim:
    call: dict
    token: str  # unique per claim: only the holder of the current claim may write the outcome

    @property
    def call_id(self) -> str:
        return self.call["callId"]

    @property
    def attempt(self) -> int:
        return self.call["attempts"]

    @property
    def settled(self) -> dict | None:
        """The decision an earlier holder settled this round and did not see through, if any."""
        return self.call.get("analysis") if self.call.get("settled") else None


class CallQueue:
    def __init__(self, calls: Collection, owner: str, lease_seconds: float,
                 clock: Callable[[], datetime] = utcnow):
        self._calls = calls
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    def claim_next(self) -> Claim | None:
        token = lease.new_token()
        now = self.clock()
        # Atomic on the server: of two processes asking at once, one gets the call.
        call = self._calls.find_one_and_update(
            _claimable(now),
            {"$set": lease.taken(self._owner, token, now + self._lease), "$inc": {"attempts": 1}},
            sort=[("callAt", ASCENDING)],
            # The queue's index, named: the claim runs once per analyzed call and must never
            # scan. MongoDB picks it anyway; a planner that gives up on the `$or` (the test
            # run's wire server) would scan.
            hint=QUEUE_INDEX_KEYS,
            projection={name: 1 for name in _CALL_FIELDS},
            return_document=ReturnDocument.AFTER,
        )
        return Claim(call, token) if call else None

    def claim_oldest(self, limit: int, token: str, lease_seconds: float) -> list[Claim]:
        """Claim up to `limit` of the oldest waiting calls under one `token` (a Batch API job):
        a few round trips instead of one per call. Each call is claimed atomically, so a call
        another process claimed in between is simply not among those returned."""
        now = self.clock()
        waiting = _claimable(now)
        ids = [doc["callId"] for doc in self._calls.find(
            waiting, {"callId": 1, "_id": 0}, sort=[("callAt", ASCENDING)], hint=QUEUE_INDEX_KEYS, limit=limit)]
        if not ids:
            return []
        self._calls.update_many(
            {"callId": {"$in": ids}, **waiting},
            {"$set": lease.taken(self._owner, token, now + timedelta(seconds=lease_seconds)), "$inc": {"attempts": 1}},
            hint=CALL_ID_INDEX_KEYS)
        return self.held(ids, token)

    def held(self, call_ids: list[str], token: str) -> list[Claim]:
        """The calls among `call_ids` still claimed under `token`."""
        calls = self._calls.find({"callId": {"$in": call_ids}, lease.TOKEN: token},
                                 {name: 1 for name in _CALL_FIELDS}, hint=CALL_ID_INDEX_KEYS)
        return [Claim(call, token) for call in calls]

    def extend(self, call_ids: list[str], token: str, lease_seconds: float) -> None:
        """Hold the claims under `token` for `lease_seconds` from now (a submitted Batch API job
        holds its calls for its completion window)."""
        self._calls.update_many({"callId": {"$in": call_ids}, lease.TOKEN: token},
                                {"$set": {lease.UNTIL: self.clock() + timedelta(seconds=lease_seconds)}},
                                hint=CALL_ID_INDEX_KEYS)

    def settle(self, claim: Claim, analysis: dict) -> bool:
        """Store `analysis` as this round's decision, while the claim is still held; the CRM may
        be written only after this returned True. False when the claim was lost."""
        result = self._calls.update_one(_held(claim), {"$set": {"analysis": analysis, "settled": True}})
        return result.matched_count == 1

    def finish(self, claim: Claim, analysis: dict | None = None) -> bool:
        """Mark the call processed (with `analysis`, when not settled before). False when the
        claim was lost (a requeue, or a lease that expired and was retaken), in which case
        nothing was written."""
        result = self._calls.update_one(_held(claim), {
            "$set": {"processed": True, **({"analysis": analysis} if analysis is not None else {})},
            "$unset": {**lease.RELEASED, "settled": ""}})
        return result.matched_count == 1

    def release(self, claim: Claim) -> None:
        """Back to the queue for the next run: the attempt was cut off, so it does not count."""
        self._calls.update_one(_held(claim), {"$unset": lease.RELEASED, "$inc": {"attempts": -1}})

    def any_claimable(self) -> bool:
        """Whether a claim would find a call: one read, where a run's slots would each make an
        empty claim (a write) when nothing waits, the steady state of most accounts."""
        return self._calls.find_one(_claimable(self.clock()), {"_id": 1}, hint=QUEUE_INDEX_KEYS) is not None

    def unclaimed(self) -> int:
        """Calls waiting for analysis that no live claim holds."""
        return self._calls.count_documents(_claimable(self.clock()), hint=QUEUE_INDEX_KEYS)

    def depth(self) -> int:
        """Calls waiting for analysis, claimed or not."""
        return self._calls.count_documents(_WAITING)

    def requeue(self, *, call_id: str | None = None, since: datetime | None = None) -> int:
        """Mark one call (`call_id`) or every call from `since` on unprocessed with a fresh attempt
        budget; returns how many calls matched. A claim in progress is dropped, so the attempt
        holding it cannot write its now-outdated outcome. The previous analysis stays on the call
        until the new one replaces it. `analysisRound` counts the requeues, so that the new
        decision adds an activity instead of overwriting the earlier one."""
        if (call_id is None) == (since is None):
            raise ValueError("give exactly one of call_id or since")
        selector = {"callId": call_id} if call_id is not None else {"callAt": {"$gte": naive_utc(since)}}
        result = self._calls.update_many(selector, {"$set": {"processed": False, "attempts": 0},
                                                    "$inc": {"analysisRound": 1},
                                                    "$unset": {**lease.RELEASED, "settled": ""}})
        return result.matched_count


def _claimable(now: datetime) -> dict:
    """Waiting for analysis and held by no live claim (never claimed, or its lease expired)."""
    return {**_WAITING, **lease.free(now)}


def _held(claim: Claim) -> dict:
    return {"callId": claim.call_id, lease.TOKEN: claim.token}
