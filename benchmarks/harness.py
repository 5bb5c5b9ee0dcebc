"""What every sync scenario needs: a MongoDB whose round trips are counted, a fake Bolna API whose
requests are counted, timing and peak memory."""
from __future__ import annotations

import os
import statistics
import time
import tracemalloc
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import mongomock
from pymongo import MongoClient, monitoring, uri_parser

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


# The wire server's process while `wire_server_if` runs it: its CPU time is measured beside each
# wall time (a server elsewhere, at MONGODB_URI, is not ours to read).
_server_pid: int | None = None


@contextmanager
def wire_server_if(asked: bool, delay_ms: float = 0.0):
    """`--wire-server`: the test run's wire server (tests.wire_server) started and made this
    process's MONGODB_URI, the server of CountedMongo and of the benchmarks' own clients, until
    the block ends. Otherwise nothing changes: MONGODB_URI as set, or mongomock.
    `delay_ms`: the server reached through benchmarks.latency_proxy, `delay_ms` added each way."""
    global _server_pid
    server = proxy = None
    if asked:
        from tests.wire_server import WireServer
        server = WireServer().start()
        os.environ["MONGODB_URI"] = server.uri
        _server_pid = server.process.pid
    try:
        if delay_ms:
            proxy = _delayed(delay_ms)
        yield
    finally:
        if proxy is not None:
            proxy.close()
        if server is not None:
            _server_pid = None
            server.close()


def _delayed(delay_ms: float):
    """MONGODB_URI pointed at a proxy in front of its server (one host, given as host:port)."""
    from benchmarks.latency_proxy import DelayProxy
    uri = CountedMongo.server_uri()
    parsed = uri_parser.parse_uri(uri)
    if not uri or len(parsed["nodelist"]) != 1:
        raise SystemExit("--delay-ms needs one server: --wire-server, or MONGODB_URI naming one host")
    host, port = parsed["nodelist"][0]
    proxy = DelayProxy(f"{host}:{port}", delay_ms)
    # Through the proxy the driver must not go looking for the host the server names itself.
    parts = urlsplit(uri)
    credentials = parts.netloc.rpartition("@")[0]
    os.environ["MONGODB_URI"] = (f"mongodb://{credentials + '@' if credentials else ''}127.0.0.1:{proxy.port}/"
                                 f"?directConnection=true" + (f"&{parts.query}" if parts.query else ""))
    return proxy


def ping_ms(pings: int = 100) -> float:
    """The median round trip of a `ping` to MONGODB_URI, proxy included: the delay a run really
    saw (on a loaded machine the proxy's own hops add to the delay asked)."""
    client = MongoClient(CountedMongo.server_uri())
    try:
        client.admin.command("ping")
        times = []
        for _ in range(pings):
            started = time.perf_counter()
            client.admin.command("ping")
            times.append(time.perf_counter() - started)
    finally:
        client.close()
    return statistics.median(times) * 1000


def server_cpu_seconds() -> float | None:
    """The wire server's CPU time so far (user + system, all its threads), from /proc; None when
    the server is not ours."""
    if _server_pid is None:
        return None
    with open(f"/proc/{_server_pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


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
    server_cpu: float | None = None  # seconds of the wire server's CPU (user + system) during the run
    # Seconds of this process's CPU during the run, every thread (the in-process fake Bolna's
    # included). What the wall time holds beyond both CPU times is waiting: on the network, or
    # on a core the machine's other processes hold.
    client_cpu: float = 0.0

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
    cpu_before = server_cpu_seconds()
    client_before = time.process_time()
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        yield measurement
    finally:
        measurement.seconds = time.perf_counter() - started
        measurement.client_cpu = time.process_time() - client_before
        if memory:
            measurement.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        measurement.requests = bolna.request_count() - requests_before
        measurement.rate_limited = sum(1 for request in bolna.requests[requests_before:] if request.status == 429)
        measurement.round_trips = mongo.counter.total
        if cpu_before is not None:
            measurement.server_cpu = server_cpu_seconds() - cpu_before
