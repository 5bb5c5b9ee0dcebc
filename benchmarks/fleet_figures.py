"""The fleet benchmark's figures, computed from what the replicas left in MongoDB (run records and
the account schedule), so they say what happened, not what a replica believed. Plain functions over
lists of documents: benchmarks/fleet_bench.py reads, these count."""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from statistics import median

CRM_SYNC, CALL_PROCESSOR = "crm_sync", "call_processor"


def percentile(values: list[float], fraction: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def slots_of(phase: datetime, interval: timedelta, start: datetime, end: datetime) -> list[datetime]:
    """A account's slots in [start, end): its due times stay on one lattice (previous due + whole
    intervals, services/accounts/schedule.py `next_due`), whose phase is any of its due times."""
    first = phase - ((phase - start) // interval) * interval  # the first lattice point at or after start
    slots = []
    while first < end:
        slots.append(first)
        first += interval
    return slots


def coverage(runs: list[dict], phases: dict, interval: timedelta, t0: datetime, intervals: int,
             closed_by: datetime) -> list[dict]:
    """Per interval k (0 = the first syncs, whose slots lie in [t0, t0 + I)): for each account's
    slot in [t0 + kI, t0 + (k+1)I), how many crm_sync runs started in [slot, slot + I). A slot whose
    window had not closed when the runs were read and has no run yet is pending, not missed."""
    starts: dict[object, list[datetime]] = defaultdict(list)
    for run in runs:
        if run["job"] == CRM_SYNC:
            starts[run["userId"]].append(run["startedAt"])
    rows = []
    for k in range(intervals + 1):
        begin, end = t0 + k * interval, t0 + (k + 1) * interval
        counts, lags, pending = [], [], 0
        for account, phase in phases.items():
            for slot in slots_of(phase, interval, begin, end):
                inside = sorted(s for s in starts[account] if slot <= s < slot + interval)
                if not inside and slot + interval > closed_by:
                    pending += 1
                    continue
                counts.append(len(inside))
                if inside:
                    lags.append((inside[0] - slot).total_seconds())
        tally = Counter(counts)
        rows.append({"interval": k, "slots": len(counts), "synced_once": tally[1], "missed": tally[0],
                     "twice_or_more": sum(n for c, n in tally.items() if c > 1), "pending": pending,
                     "min": min(counts, default=0), "max": max(counts, default=0),
                     "lag_p50_s": percentile(lags, 0.5), "lag_max_s": max(lags, default=None)})
    return rows


def overlaps(runs: list[dict], ends_of_dead: dict[int, datetime], now: datetime) -> int:
    """Pairs of one account's runs (either job) whose [startedAt, finishedAt] overlap: a account
    synced twice at once. A run a killed replica left open ends when it was killed."""
    by_account: dict[object, list[tuple[datetime, datetime]]] = defaultdict(list)
    for run in runs:
        end = run.get("finishedAt") or ends_of_dead.get(run.get("pid"), now)
        by_account[run["userId"]].append((run["startedAt"], end))
    count = 0
    for spans in by_account.values():
        spans.sort()
        for i, (_, end) in enumerate(spans):
            count += sum(1 for start, _ in spans[i + 1:] if start < end)
    return count


def in_window(runs: list[dict], begin: datetime, end: datetime, job: str = CRM_SYNC) -> list[dict]:
    return [run for run in runs if run["job"] == job and begin <= run["startedAt"] < end]


def spread(runs: list[dict]) -> dict[int, int]:
    """Account syncs (crm_sync runs) per replica pid."""
    return dict(sorted(Counter(run["pid"] for run in runs if run["job"] == CRM_SYNC).items()))


def sync_seconds(runs: list[dict]) -> list[float]:
    """One account sync, both jobs: a crm_sync's start to the end of the call_processor run the
    same replica ran next for the same account."""
    by_replica: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        by_replica[(run["userId"], run["pid"])].append(run)
    seconds = []
    for series in by_replica.values():
        series.sort(key=lambda run: run["startedAt"])
        for first, second in zip(series, series[1:]):
            if (first["job"], second["job"]) == (CRM_SYNC, CALL_PROCESSOR) and second.get("finishedAt"):
                seconds.append((second["finishedAt"] - first["startedAt"]).total_seconds())
    return seconds


def takeover(runs: list[dict], leased: dict, killed_pid: int, killed_at: datetime) -> dict:
    """For each account the killed replica held: the time from the kill (and from its lease's end)
    to the first run another replica started for it."""
    after_kill, after_lease, waiting = [], [], []
    for account, until in leased.items():
        starts = sorted(run["startedAt"] for run in runs if run["userId"] == account and run["job"] == CRM_SYNC
                        and run["pid"] != killed_pid and run["startedAt"] > killed_at)
        if not starts:
            waiting.append(account)
            continue
        after_kill.append((starts[0] - killed_at).total_seconds())
        after_lease.append((starts[0] - until).total_seconds())
    return {"accounts": len(leased), "taken_over": len(after_kill), "not_taken_over": len(waiting),
            "max_s": max(after_kill, default=None), "median_s": median(after_kill) if after_kill else None,
            "after_lease_end_max_s": max(after_lease, default=None)}
