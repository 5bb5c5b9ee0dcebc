"""A first sync of trimmed calls through a fake Bolna that answers after 100 ms and enforces
Bolna's documented limits (500 listings and 1,000 other requests a minute; 429 beyond), both
jobs side by side as the daemon runs them, against the rate-limit floor: the full records at
1,000 a minute (or the listings at 500 a minute, if they took longer). Beside it, the naive
baseline making one request after another.

Time-scaled: the fake's minute and the client's pacing both last `minute` seconds instead of 60,
so a 10-minute floor is measured in `minute / 6` minutes; every ratio is unchanged."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from benchmarks.baseline import naive_sync
from benchmarks.harness import CountedMongo, Measurement, app_for, client_for, fake_bolna, measure, settings_for
from fakes.bolna_api import LISTING_PER_MINUTE, OTHER_PER_MINUTE, trim
from fakes.dataset import generate
from models.execution import needs_full_record
from services.bolna_client import MAX_PAGE_SIZE
from utils.clock import utcnow
from worker.app import JOB_NAMES

LATENCY_SECONDS = 0.1
AGENTS = 4


def _dataset(total: int):
    return generate(agents=AGENTS, per_agent=total // AGENTS, seed=606, span_days=20, transcript_chars=400,
                    now=datetime.now(timezone.utc) - timedelta(minutes=30))


def floor_seconds(executions: list[dict], minute: float) -> float:
    """The least time Bolna's limits allow for one read of each call's full record, and each
    job's listing of every agent's pages."""
    records = sum(1 for record in executions if needs_full_record(trim(record)))
    pages = sum(-(-n // MAX_PAGE_SIZE) for n in _per_agent(executions).values())
    return max(records / OTHER_PER_MINUTE, len(JOB_NAMES) * pages / LISTING_PER_MINUTE) * minute


def _per_agent(executions: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in executions:
        counts[record["agent_id"]] = counts.get(record["agent_id"], 0) + 1
    return counts


def backfill(total: int, minute: float) -> tuple[Measurement, float]:
    """(callsync's first sync, the floor in seconds)."""
    agents, executions = _dataset(total)
    ours = Measurement(records=len(executions))
    with fake_bolna(agents, executions, minute=minute, projection="trimmed", latency=LATENCY_SECONDS) as bolna:
        mongo = CountedMongo()
        try:
            settings = settings_for(bolna.base_url, bolna_agent_ids=tuple(a["id"] for a in agents))
            app = app_for(settings, mongo, minute=minute)
            with measure(ours, mongo, bolna):
                _side_by_side(app)
            app.close()
        finally:
            mongo.close()
    return ours, floor_seconds(executions, minute)


def sequential(total: int, minute: float) -> Measurement:
    """The naive baseline over the same kind of data: every request waits for the one before."""
    agents, executions = _dataset(total)
    naive = Measurement(records=len(executions))
    with fake_bolna(agents, executions, minute=minute, projection="trimmed", latency=LATENCY_SECONDS) as bolna:
        mongo = CountedMongo()
        try:
            settings = settings_for(bolna.base_url)
            client = client_for(settings, minute=minute)
            now = utcnow()
            with measure(naive, mongo, bolna):
                naive_sync(mongo.db, client, [a["id"] for a in agents], now - timedelta(days=settings.backfill_days),
                           now, settings.default_phone_region)
            client.close()
        finally:
            mongo.close()
    return naive


def _side_by_side(app) -> None:
    """Both jobs at once, as the daemon's scheduler starts them."""
    threads = [threading.Thread(target=app.run_job, args=(name,)) for name in JOB_NAMES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
