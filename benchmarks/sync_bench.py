"""Sync scenarios: a first sync, and steady-state runs over a long history, each against the naive
baseline (benchmarks.baseline) on the same data."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from benchmarks.baseline import naive_sync
from benchmarks.harness import (API_KEY, CountedMongo, Measurement, app_for, measure,
                                settings_for)
from fakes.bolna_server import FakeBolna
from fakes.dataset import generate
from models.call import call_fields
from models.execution import parse_execution
from services.bolna_client import BolnaClient
from services.database import CALLS, SYNC_STATE, ensure_indexes
from utils.clock import utcnow
from worker.jobs import JOB_NAMES

AGENTS = 4


def _dataset(total: int, span_days: float, seed: int):
    return generate(agents=AGENTS, per_agent=total // AGENTS, seed=seed, span_days=span_days,
                    transcript_chars=400, now=datetime.now(timezone.utc) - timedelta(minutes=30))


def _index_for_baseline(mongo: CountedMongo) -> None:
    """On a server the baseline gets the daemon's indexes, so that it pays for its round trips,
    not for collection scans. (mongomock plans nothing: there, indexes only cost.)"""
    if mongo.uri:
        ensure_indexes(mongo.raw)


def first_sync(total: int) -> tuple[Measurement, Measurement]:
    """Both jobs on an empty database (analysis off: it has its own row)."""
    agents, executions = _dataset(total, span_days=20, seed=101)
    with FakeBolna(agents, executions, api_key=API_KEY) as bolna:
        ours, naive = Measurement(records=len(executions)), Measurement(records=len(executions))
        mongo = CountedMongo()
        try:
            app = app_for(settings_for(bolna.base_url), mongo)
            with measure(ours, mongo, bolna, memory=True):
                for name in JOB_NAMES:
                    app.run_job(name)
        finally:
            mongo.close()
        mongo = CountedMongo()
        try:
            _index_for_baseline(mongo)
            settings = settings_for(bolna.base_url)
            now = utcnow()
            with measure(naive, mongo, bolna, memory=True):
                naive_sync(mongo.db, BolnaClient.from_settings(settings), [a["id"] for a in agents],
                           now - timedelta(days=settings.backfill_days), now, settings.default_phone_region)
        finally:
            mongo.close()
    return ours, naive


def _seed_history(mongo: CountedMongo, executions: list[dict], agents: list[dict], region: str) -> None:
    """The state a long-running daemon has reached: every call stored, each cursor at the last run.
    Inserted directly, before the indexes exist: mongomock has no indexes to use, so a first sync
    of 100k through it would scan the collection once per upsert (hours). The steady-state run
    itself goes through the real code."""
    now = utcnow()
    documents = [{**call_fields(parse_execution(record, region)), "processed": True, "attempts": 1,
                  "createdAt": now, "updatedAt": now} for record in executions]
    for start in range(0, len(documents), 10_000):
        mongo.raw[CALLS].insert_many(documents[start:start + 10_000], ordered=False)
    for agent in agents:
        for job in JOB_NAMES:
            mongo.raw[SYNC_STATE].insert_one({"_id": f"{job}:{agent['id']}", "job": job, "agentId": agent["id"],
                                              "cursor": now - timedelta(minutes=5), "updatedAt": now})


def steady_state(history: int, new_calls: int) -> Measurement:
    """One run of each job over `history` stored calls with `new_calls` just made."""
    agents, executions = _dataset(history, span_days=29, seed=202)
    fresh = generate(agents=AGENTS, per_agent=max(new_calls // AGENTS, 1), seed=303, span_days=0.001)[1][:new_calls]
    for index, record in enumerate(fresh):  # the new calls belong to the same agents
        record["agent_id"] = agents[index % AGENTS]["id"]
    ours = Measurement(records=new_calls)
    with FakeBolna(agents, executions + fresh, api_key=API_KEY) as bolna:
        mongo = CountedMongo()
        try:
            settings = settings_for(bolna.base_url, bolna_agent_ids=tuple(a["id"] for a in agents))
            _seed_history(mongo, executions, agents, settings.default_phone_region)
            app = app_for(settings, mongo)
            with measure(ours, mongo, bolna, memory=True):
                for name in JOB_NAMES:
                    app.run_job(name)
        finally:
            mongo.close()
    return ours


def naive_rerun(history: int, new_calls: int) -> Measurement:
    """The baseline's second run: the whole backfill period again, record by record."""
    agents, executions = _dataset(history + new_calls, span_days=29, seed=404)
    naive = Measurement(records=history + new_calls)
    with FakeBolna(agents, executions, api_key=API_KEY) as bolna:
        mongo = CountedMongo()
        try:
            _index_for_baseline(mongo)
            settings = settings_for(bolna.base_url)
            client, ids = BolnaClient.from_settings(settings), [a["id"] for a in agents]
            now = utcnow()
            start = now - timedelta(days=settings.backfill_days)
            naive_sync(mongo.db, client, ids, start, now, settings.default_phone_region)  # the first run
            with measure(naive, mongo, bolna, memory=True):
                naive_sync(mongo.db, client, ids, start, now, settings.default_phone_region)
        finally:
            mongo.close()
    return naive
