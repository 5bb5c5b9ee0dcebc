"""Sync scenarios: a first sync, steady-state runs over a long history, and a `--full` re-sync
that reads the whole history, unchanged or changed at Bolna since; callsync and the naive baseline (benchmarks.baseline) on the same
data, at the same sizes. Bolna's rate limits are lifted here (harness.LIFTED_MINUTE)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from benchmarks.baseline import naive_sync
from benchmarks.harness import CountedMongo, Measurement, app_for, client_for, fake_bolna, measure, settings_for
from fakes.dataset import generate
from models.call import call_fields
from models.execution import parse_execution
from services.database import CALLS, CUSTOMER_CALLS, SYNC_STATE, ensure_indexes
from utils.clock import utcnow
from worker.app import JOB_NAMES

AGENTS = 4
CURSOR_AGE = timedelta(minutes=5)  # the last run, as a daemon on a 5-minute interval leaves it


def _dataset(total: int, span_days: float, seed: int):
    return generate(agents=AGENTS, per_agent=total // AGENTS, seed=seed, span_days=span_days,
                    transcript_chars=400, now=datetime.now(timezone.utc) - timedelta(minutes=30))


def _index_for_baseline(mongo: CountedMongo) -> None:
    """On a server the baseline gets the daemon's indexes, so that it pays for its round trips,
    not for collection scans. (mongomock plans nothing: there, indexes only cost.)"""
    if mongo.uri:
        ensure_indexes(mongo.raw)


def _ours(bolna, agents: list[dict], measurement: Measurement, *, seed=None, full: bool = False,
          memory: bool = True) -> Measurement:
    mongo = CountedMongo()
    try:
        settings = settings_for(bolna.base_url, bolna_agent_ids=tuple(a["id"] for a in agents))
        if seed:
            seed(mongo, settings)
        app = app_for(settings, mongo)
        with measure(measurement, mongo, bolna, memory=memory):
            for name in JOB_NAMES:
                app.run_job(name, full=full)
        app.close()
    finally:
        mongo.close()
    return measurement


def _naive(bolna, agents: list[dict], measurement: Measurement, start: datetime, *, seed=None,
           memory: bool = True) -> Measurement:
    mongo = CountedMongo()
    try:
        _index_for_baseline(mongo)
        settings = settings_for(bolna.base_url)
        if seed:
            seed(mongo, settings)
        client = client_for(settings)
        with measure(measurement, mongo, bolna, memory=memory):
            naive_sync(mongo.db, client, [a["id"] for a in agents], start, utcnow(), settings.default_phone_region)
        client.close()
    finally:
        mongo.close()
    return measurement


def first_sync(total: int) -> tuple[Measurement, Measurement]:
    """Both jobs on an empty database (analysis off: it has its own row), and the baseline's
    first run over the same backfill. Memory is not traced: tracemalloc slows every allocation,
    and so the wall times compared (it tripled callsync's CPU and added a third to the
    baseline's at 2,000 calls); the runs that read a history measure memory."""
    agents, executions = _dataset(total, span_days=20, seed=101)
    with fake_bolna(agents, executions) as bolna:
        ours = _ours(bolna, agents, Measurement(records=len(executions)), memory=False)
        backfill = timedelta(days=settings_for(bolna.base_url).backfill_days)
        naive = _naive(bolna, agents, Measurement(records=len(executions)), utcnow() - backfill, memory=False)
    return ours, naive


def _seeder(executions: list[dict], agents: list[dict], *, links: bool):
    """The state a long-running daemon has reached: every call stored (and, with `links`, applied
    to its customer), each cursor at the last run. Inserted directly: mongomock has no indexes,
    so writing 100k through the jobs would scan the collection once per upsert (hours). The
    measured run itself goes through the real code."""
    def seed(mongo: CountedMongo, settings) -> None:
        now = utcnow()
        parsed = [parse_execution(record, settings.default_phone_region) for record in executions]
        documents = [{**call_fields(e), "processed": True, "attempts": 1, "createdAt": now, "updatedAt": now}
                     for e in parsed]
        for start in range(0, len(documents), 10_000):
            mongo.raw[CALLS].insert_many(documents[start:start + 10_000], ordered=False)
        if links:
            applied = [{"_id": e.id, "phone": e.customer_phone.key, "at": e.created_at, "applied": True}
                       for e in parsed if e.terminal and e.customer_phone]
            for start in range(0, len(applied), 10_000):
                mongo.raw[CUSTOMER_CALLS].insert_many(applied[start:start + 10_000], ordered=False)
        mongo.raw[SYNC_STATE].insert_many([
            {"_id": f"{job}:{agent['id']}", "job": job, "agentId": agent["id"], "cursor": now - CURSOR_AGE,
             "updatedAt": now} for agent in agents for job in JOB_NAMES])
    return seed


def _with_new_calls(history: int, new_calls: int, seed: int):
    agents, executions = _dataset(history, span_days=29, seed=seed)
    fresh = generate(agents=AGENTS, per_agent=max(new_calls // AGENTS, 1), seed=303, span_days=0.001)[1][:new_calls]
    for index, record in enumerate(fresh):  # the new calls belong to the same agents
        record["agent_id"] = agents[index % AGENTS]["id"]
    return agents, executions, fresh


def steady_state(history: int, new_calls: int, *, naive: bool = True) -> tuple[Measurement, Measurement | None]:
    """One run of each job over `history` stored calls with `new_calls` just made; the baseline
    over the same history, reading from its cursor too."""
    agents, executions, fresh = _with_new_calls(history, new_calls, seed=202)
    with fake_bolna(agents, executions + fresh) as bolna:
        seed = _seeder(executions, agents, links=False)
        ours = _ours(bolna, agents, Measurement(records=new_calls), seed=seed)
        theirs = None
        if naive:
            overlap = timedelta(minutes=settings_for(bolna.base_url).sync_overlap_minutes)
            theirs = _naive(bolna, agents, Measurement(records=new_calls), utcnow() - CURSOR_AGE - overlap, seed=seed)
    return ours, theirs


def full_resync(history: int) -> Measurement:
    """`once --full` over a stored history: every page of every agent read again (nothing to
    write), the run whose memory would grow with the history if pages were not streamed."""
    agents, executions = _dataset(history, span_days=29, seed=404)
    with fake_bolna(agents, executions) as bolna:
        return _ours(bolna, agents, Measurement(records=history), seed=_seeder(executions, agents, links=True),
                     full=True)


def changed_resync(history: int) -> tuple[Measurement, Measurement]:
    """`once --full` over the `full_resync` history after Bolna changed every call: the fake serves
    each with a newer `updated_at` (its clock's, as Bolna stamps a change), so every stored call
    is written again; the baseline re-reads the same window, one upsert per record."""
    agents, executions = _dataset(history, span_days=29, seed=404)
    seed = _seeder(executions, agents, links=True)
    with fake_bolna(agents, executions) as bolna:
        for record in executions:
            bolna.update_execution(record["id"])
        ours = _ours(bolna, agents, Measurement(records=history), seed=seed, full=True)
        backfill = timedelta(days=settings_for(bolna.base_url).backfill_days)
        naive = _naive(bolna, agents, Measurement(records=history), utcnow() - backfill, seed=seed)
    return ours, naive
