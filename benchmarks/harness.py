"""What every sync scenario needs: a MongoDB whose round trips are counted, a fake Bolna API whose
requests are counted, timing and peak memory."""
from __future__ import annotations

import os
import time
import tracemalloc
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import mongomock
from pymongo import MongoClient, monitoring

from fakes.bolna_api import RateLimits
from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedDatabase, RoundTripCounter
from services.bolna_client import BolnaClient, Limits
from utils.config import Settings
from worker.app import Runtime

API_KEY = "bench-key"
# The scenarios about the database lift Bolna's rate limits (its minute shortened to 0.6 s, a
# hundred times the rate), so what they time is the database and the mapping; the backfill
# scenario (benchmarks/backfill_bench.py) is the one that runs under the limits.
LIFTED_MINUTE = 0.6
# Connection upkeep, not the daemon's work.
_HOUSEKEEPING = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions", "saslStart",
                           "saslContinue", "buildInfo"})


@contextmanager
def wire_server_if(asked: bool):
    """`--wire-server`: the test run's wire server (tests.wire_server) started and made this
    process's MONGODB_URI, the server of CountedMongo and of the benchmarks' own clients, until
    the block ends. Otherwise nothing changes: MONGODB_URI as set, or mongomock."""
    if not asked:
        yield
        return
    from tests.wire_server import WireServer
    server = WireServer().start()
    os.environ["MONGODB_URI"] = server.uri
    try:
        yield
    finally:
        server.close()


class CommandCounter(monitoring.CommandListener):
    """Round trips on a real server: every command the driver sends (getMore included)."""

    def __init__(self):
        self.total = 0

    def started(self, event):
        if event.command_name not in _HOUSEKEEPING:
            self.total += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def reset(self) -> None:
        self.total = 0


@dataclass
class Measurement:
    seconds: float = 0.0
    requests: int = 0
    round_trips: int = 0
    peak_mb: float | None = None
    records: int = 0
    rate_limited: int = 0  # 429 answers Bolna gave during the run

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


class CountedMongo:
    """mongomock behind the counting wrapper, or, when MONGODB_URI is set, a real server watched
    by command monitoring (a fresh database, dropped on close)."""

    @staticmethod
    def server_uri() -> str:
        return os.environ.get("MONGODB_URI", "").strip()

    def __init__(self):
        self.uri = self.server_uri()
        if self.uri:
            self.counter = CommandCounter()
            self.client = MongoClient(self.uri, tz_aware=False, event_listeners=[self.counter])
            self.name = f"callsync_bench_{uuid.uuid4().hex[:8]}"
            self.db = self.client[self.name]
        else:
            self.counter = RoundTripCounter()
            self.client = mongomock.MongoClient()
            self.name = "callsync_bench"
            self.db = HookedDatabase(self.client[self.name], self.counter)

    @property
    def raw(self):
        """The database without counting, for seeding."""
        return self.client[self.name]

    def close(self) -> None:
        if self.uri:
            self.client.drop_database(self.name)
        self.client.close()


def fake_bolna(agents: list[dict], executions: list[dict], *, minute: float = LIFTED_MINUTE, **options) -> FakeBolna:
    """The fake Bolna, enforcing the documented limits over a minute of `minute` seconds."""
    return FakeBolna(agents, executions, api_key=API_KEY, rate_limits=RateLimits(minute_seconds=minute), **options)


def client_for(settings: Settings, *, minute: float = LIFTED_MINUTE, headroom: float | None = None) -> BolnaClient:
    """The daemon's client, pacing itself over the same minute as the fake."""
    limits = Limits(settings.bolna_listing_rate_per_minute, settings.bolna_rate_per_minute,
                    settings.bolna_rate_headroom if headroom is None else headroom, minute_seconds=minute)
    return BolnaClient(settings.bolna_base_url, settings.bolna_api_key, timeout=settings.http_timeout_seconds,
                       max_attempts=settings.http_max_attempts, backoff_seconds=settings.http_backoff_seconds,
                       limits=limits, connections=settings.bolna_fetch_concurrency + 4)


def settings_for(base_url: str, **overrides) -> Settings:
    return Settings(mongodb_db="callsync_bench", bolna_api_key=API_KEY, bolna_base_url=base_url,
                    backfill_days=30, llm_calls_per_run=0, **overrides)


def app_for(settings: Settings, mongo: CountedMongo, *, minute: float = LIFTED_MINUTE) -> Runtime:
    app = Runtime(settings, mongo.db, bolna=client_for(settings, minute=minute))
    app.prepare()
    return app


@contextmanager
def measure(measurement: Measurement, mongo: CountedMongo, bolna, *, memory: bool = False):
    """Time the block, and count the requests and round trips it made."""
    mongo.counter.reset()
    requests_before = bolna.request_count()
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        yield measurement
    finally:
        measurement.seconds = time.perf_counter() - started
        if memory:
            measurement.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        measurement.requests = bolna.request_count() - requests_before
        measurement.rate_limited = sum(1 for request in bolna.requests[requests_before:] if request.status == 429)
        measurement.round_trips = mongo.counter.total
