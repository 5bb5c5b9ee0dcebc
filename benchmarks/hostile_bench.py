"""`python -m benchmarks hostile [--quick] [--wire-server]`: what an attacker's input costs.

- every regular expression of the product (the compiled `re.Pattern` objects of the modules under
  models/, services/, utils/ and worker/) over 1 MB adversarial strings, generated from each
  pattern: a run of each character the pattern names (a letter, a digit, a space, each of its
  punctuation), the same run ending in each other one, and each pair alternating. Each pattern
  runs in a child process, stopped when one input takes longer than a deadline, so a pattern that
  backtracks is reported, not waited for;
- the webhook listener under 1,000 idle connections (from 50 loopback addresses, 20 each): the
  first delivery after the flood opened (it waits for the listener to accept the queue ahead of
  it) and the median of 20 more while the flood is held;
- the health listener under 1,000 idle connections: the process's threads before and during, and
  `/healthz`'s median answer time (worker/health.py as it is on this branch: the webhook listener's
  waitress `BoundedServer`, whose loop holds an idle connection as a socket, never a thread);
- one account's flood of 10,000 deliveries, stored while the processor was stopped (an outage,
  the worst case: twice WEBHOOK_MAX_WAITING, more than the cap lets one account gather), then one
  delivery of another account: how long, once the processor starts,
  until that one is written, beside one batch's time and the time to drain the flood (what the
  other account waited when the oldest came first); and the flooding account's next deliveries,
  over its WEBHOOK_MAX_WAITING, answered 429.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import pkgutil
import re
import socket
import statistics
import string
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import mongomock
import requests
from pymongo import MongoClient

from benchmarks.harness import CountedMongo
from fakes.bolna_server import FakeBolna
from fakes.dataset import iso
from fakes.mongo_hooks import HookedClient
from services.database import CALLS, WEBHOOK_INBOX
from services.database import account_view
from services.webhooks import BATCH, InboxProcessor, waiting_entry
from tests.helpers import AGENT, execution
from utils.clock import utcnow
from utils.config import Settings
from worker.webhook_listener import PATH_PREFIX, SenderPolicy, WebhookListener, account_token, raise_descriptor_limit

PRODUCT_PACKAGES = ("models", "services", "utils", "worker")
MEGABYTE = 1 << 20
TOKEN = "hostile_" + "0123456789abcdef" * 2
DATABASE = "callsync_hostile_bench"
# (full, --quick)
SIZES = {"regex_bytes": (MEGABYTE, MEGABYTE // 4), "regex_deadline_s": (10.0, 5.0), "connections": (1000, 1000),
         "flood": (10_000, 2_000)}
IDLE_SOURCES = [f"127.0.1.{n}" for n in range(1, 51)]


# -- regular expressions ---------------------------------------------------------------------

def product_patterns() -> list[tuple[str, re.Pattern]]:
    """Every compiled pattern held by a product module (directly, or in a tuple, list or dict)."""
    found: dict[int, tuple[str, re.Pattern]] = {}
    for package in PRODUCT_PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                values = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) \
                    else (value,)
                for item in values:
                    if isinstance(item, re.Pattern) and id(item) not in found:
                        found[id(item)] = (f"{info.name}.{name}", item)
    return sorted(found.values(), key=lambda named: named[0])


def adversarial_inputs(pattern: re.Pattern, size: int):
    """(description, text) pairs: runs of each character the pattern names, a run ending in
    another, and pairs alternating, each `size` characters long."""
    source = pattern.pattern
    named = {char for char in source if char in string.punctuation and char != "\\"}
    if re.search(r"\\w|a-z|A-Z|\.", source):
        named.add("a")
    if re.search(r"\\d|\\w|0-9|\.", source):
        named.add("1")
    if re.search(r"\\s|\.| ", source):
        named.add(" ")
    named.add("\n")
    chars = sorted(named)
    for char in chars:
        yield f"{char!r} x {size:,}", char * size
        for other in chars:
            if other != char:
                yield f"{char!r} x {size - 1:,} + {other!r}", char * (size - 1) + other
                yield f"({char!r} {other!r}) x {size // 2:,}", (char + other) * (size // 2)


def _time_pattern(pattern: re.Pattern, size: int, progress) -> None:
    for description, text in adversarial_inputs(pattern, size):
        progress.send(("start", description))
        started = time.perf_counter()
        for _ in pattern.finditer(text):
            pass
        progress.send(("done", description, time.perf_counter() - started))
    progress.send(("end",))


def slowest_input(pattern: re.Pattern, size: int, deadline: float) -> tuple[str, float, bool]:
    """The slowest adversarial input of a pattern: (description, seconds, finished). Run in a child
    process, stopped when one input takes longer than `deadline` seconds (then `finished` is False)."""
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_time_pattern, args=(pattern, size, sending), daemon=True)
    child.start()
    sending.close()
    slowest, current = ("-", 0.0), "-"
    try:
        while True:
            if not receiving.poll(deadline):
                return current, deadline, False
            message = receiving.recv()
            if message[0] == "start":
                current = message[1]
            elif message[0] == "done":
                if message[2] > slowest[1]:
                    slowest = (message[1], message[2])
            else:
                return slowest[0], slowest[1], True
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiving.close()


def regexes(size: int, deadline: float) -> list[dict]:
    return [{"pattern": name, "source": pattern.pattern, **dict(zip(("input", "seconds", "finished"),
                                                                    slowest_input(pattern, size, deadline)))}
            for name, pattern in product_patterns()]


# -- connection floods -----------------------------------------------------------------------

class Flood(list):
    """The flood's sockets, how many connected, and how long opening them took."""
    connected = 0
    seconds = 0.0


@contextmanager
def idle_connections(target: tuple[str, int], count: int, connect_timeout: float = 2.0):
    needed = 2 * count + 512
    if raise_descriptor_limit(needed) < needed:
        raise SystemExit(f"the flood needs {needed} open descriptors: raise `ulimit -n`")
    held = Flood()
    started = time.perf_counter()
    try:
        for n in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((IDLE_SOURCES[n % len(IDLE_SOURCES)], 0))
            sock.settimeout(connect_timeout)
            try:
                sock.connect(target)
                held.connected += 1
            except OSError:
                pass  # refused or not accepted in time: the server's doing, not an error of the flood
        held.seconds = time.perf_counter() - started
        yield held
    finally:
        for sock in held:
            sock.close()


def _record(call_id: str, number: str) -> dict:
    created = utcnow() - timedelta(minutes=5)
    record = execution(number, call_id=call_id, extracted={"user_interested": True})
    record.update(created_at=iso(created), updated_at=iso(created + timedelta(minutes=3)))
    return record


def _settings(**overrides) -> Settings:
    return Settings(**{"mongodb_db": DATABASE, "bolna_api_key": "bench-key", "webhook_port": 0,
                       "webhook_token": TOKEN, "webhook_allowed_ips": ("127.0.0.1",), "health_port": 0, **overrides})


@contextmanager
def _mongo():
    uri = CountedMongo.server_uri()
    client = MongoClient(uri, tz_aware=False) if uri else HookedClient(mongomock.MongoClient())
    try:
        if uri:
            client.drop_database(DATABASE)
        yield client
    finally:
        if uri:
            client.drop_database(DATABASE)
        client.close()


@contextmanager
def _app(mongo_client, **overrides):
    from worker.app import Runtime
    with FakeBolna([AGENT], [], api_key="bench-key") as bolna:
        app = Runtime.build(_settings(bolna_base_url=bolna.base_url, **overrides), mongo_client=mongo_client)
        app.prepare()
        yield app


def _closed(sockets: list[socket.socket]) -> int:
    """How many of `sockets` the server has closed (readable at once, with nothing to read)."""
    closed = 0
    for sock in sockets:
        sock.setblocking(False)  # with a timeout set, recv() would wait for one first
        try:
            closed += sock.recv(1, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def listener_flood(mongo_client, connections: int) -> dict:
    with _app(mongo_client) as app:
        listener = WebhookListener(app.webhook_routes, SenderPolicy(app.settings.webhook_allowed_ips),
                                   app.deliveries, max_body_bytes=app.settings.webhook_max_body_bytes,
                                   region="IN", host="127.0.0.1", port=0).start()
        url = "http://%s:%d%s%s" % (*listener.address, PATH_PREFIX, TOKEN)
        try:
            with idle_connections(listener.address, connections) as flood, requests.Session() as session:
                started = time.perf_counter()
                first = session.post(url, data=json.dumps(_record("first", "+919800000000")), timeout=60)
                first_seconds = time.perf_counter() - started
                latencies = []
                for n in range(20):
                    body = json.dumps(_record(f"held-{n}", f"+9198{n:08d}"))
                    started = time.perf_counter()
                    answer = session.post(url, data=body, timeout=60)
                    latencies.append(time.perf_counter() - started)
                    if answer.status_code != 200:
                        raise RuntimeError(f"a delivery under the flood answered {answer.status_code}")
                closed = _closed(flood)
        finally:
            listener.stop()
    if first.status_code != 200:
        raise RuntimeError(f"the first delivery under the flood answered {first.status_code}")
    return {"connections": connections, "connected": flood.connected, "open_seconds": flood.seconds,
            "first_ms": 1000 * first_seconds,
            "median_ms": 1000 * statistics.median(latencies), "max_ms": 1000 * max(latencies),
            "closed": closed}


def health_flood(mongo_client, connections: int) -> dict:
    from worker.health import HealthServer
    with _app(mongo_client) as app:
        health = HealthServer(app, is_scheduling=lambda: True).start()
        url = "http://%s:%d/healthz" % health.address
        try:
            requests.get(url, timeout=10)
            threads_before = threading.active_count()
            with idle_connections(health.address, connections) as flood, requests.Session() as session:
                time.sleep(1.0)  # what the server starts for the connections, started
                threads_during = threading.active_count()
                latencies = []
                for _ in range(20):
                    started = time.perf_counter()
                    try:
                        session.get(url, timeout=10)
                        latencies.append(time.perf_counter() - started)
                    except requests.RequestException:
                        latencies.append(float("inf"))
                closed = _closed(flood)
        finally:
            health.stop()
    return {"connections": connections, "connected": flood.connected, "open_seconds": flood.seconds,
            "threads_before": threads_before, "threads_during": threads_during,
            "median_ms": 1000 * statistics.median(latencies), "max_ms": 1000 * max(latencies), "closed": closed}


def account_flood(mongo_client, flood: int) -> dict:
    """Two accounts. `flood` deliveries of one stored as `Inbox.accept` stores them while the
    processor is stopped, inserted in bulk: past WEBHOOK_MAX_WAITING the listener refuses them, and
    a flood this deep is the backlog to drain, not the accepts (measured by the webhook benchmark);
    then one of the other account through the listener, and 20 more of the flooding account, over
    its cap: each refusal counts the account's entries afresh (`Inbox` counts before any refusal)."""
    from worker.app import Runtime

    with FakeBolna([], [], api_key="key-flood", label="flood") as bolna:
        bolna.add_account("key-other", [], [], label="other")
        db = mongo_client[DATABASE]
        db["users"].insert_many([{"_id": name, "bolnaApiKey": f"key-{name}", "subscription": {"status": "active"}}
                                 for name in ("flood", "other")])
        settings = _settings(account_source="mongodb", bolna_api_key=None, bolna_base_url=bolna.base_url)
        fleet = Runtime(settings, db)
        fleet.prepare()
        entries = [waiting_entry(f"flood-{n}", "completed", None,
                                 json.dumps(_record(f"flood-{n}", f"+9198{n:08d}")).encode(), rank=n)
                   for n in range(flood)]
        for start in range(0, flood, 1000):
            account_view(db, "flood")[WEBHOOK_INBOX].insert_many(entries[start:start + 1000])
        listener = WebhookListener(fleet.webhook_routes, SenderPolicy(settings.webhook_allowed_ips),
                                   fleet.deliveries, max_body_bytes=settings.webhook_max_body_bytes,
                                   region="IN", host="127.0.0.1", port=0).start()
        try:
            base = "http://%s:%d%s" % (*listener.address, PATH_PREFIX)
            answer = requests.post(base + account_token(TOKEN, "other"),
                                   data=json.dumps(_record("other-1", "+14155550100")), timeout=60)
            throttled = []
            with requests.Session() as session:
                for n in range(20):
                    started = time.perf_counter()
                    refused = session.post(base + account_token(TOKEN, "flood"),
                                           data=json.dumps(_record(f"more-{n}", f"+9197{n:08d}")), timeout=60)
                    throttled.append((refused.status_code, time.perf_counter() - started))
        finally:
            listener.stop()
        if answer.status_code != 200:
            raise RuntimeError(f"the other account's delivery answered {answer.status_code}")
        processor = InboxProcessor(fleet.webhook_processor.inbox, fleet.webhook_processor.writers_for,
                                   fleet.deliveries)
        batches, other_seconds, other_batches, batch_seconds = 0, None, None, []
        started = time.perf_counter()
        while True:
            batch_started = time.perf_counter()
            if not processor.process_batch():
                break
            batches += 1
            batch_seconds.append(time.perf_counter() - batch_started)
            if other_seconds is None and db[CALLS].count_documents({"userId": "other"}):
                other_seconds, other_batches = time.perf_counter() - started, batches
        drained_seconds = time.perf_counter() - started
        written = db[CALLS].count_documents({"userId": "flood"})
    return {"flood": flood, "cap": settings.webhook_max_waiting,
            "throttled": sum(1 for code, _ in throttled if code == 429), "tried": len(throttled),
            "throttle_ms": 1000 * statistics.median(seconds for _, seconds in throttled),
            "other_ms": 1000 * other_seconds, "other_batches": other_batches,
            "batch_ms": 1000 * statistics.median(batch_seconds), "batches": batches,
            "drained_seconds": drained_seconds, "written": written}


# -- the report ------------------------------------------------------------------------------

def run(quick: bool) -> list[str]:
    """Measure everything; the lines to print."""
    pick = {name: sizes[quick] for name, sizes in SIZES.items()}
    lines = []
    started = time.perf_counter()
    patterns = regexes(pick["regex_bytes"], pick["regex_deadline_s"])
    slowest = max(patterns, key=lambda row: (not row["finished"], row["seconds"]))
    lines.append(f"regular expressions: {len(patterns)} product patterns, each over its adversarial inputs of "
                 f"{pick['regex_bytes']:,} characters ({time.perf_counter() - started:.0f} s):")
    for row in sorted(patterns, key=lambda row: (not row["finished"], row["seconds"]), reverse=True):
        took = f"{row['seconds']:.3f} s" if row["finished"] else f"> {pick['regex_deadline_s']:.0f} s (stopped)"
        lines.append(f"  {row['pattern']:<45} {took:>20}  slowest on {row['input']}")
    print("\n".join(lines), flush=True)
    with _mongo() as client:
        listener = listener_flood(client, pick["connections"])
    print("  listener flood measured", flush=True)
    with _mongo() as client:
        health = health_flood(client, pick["connections"])
    print("  health flood measured", flush=True)
    with _mongo() as client:
        fair = account_flood(client, pick["flood"])
    lines = []
    took = f"{slowest['seconds']:.3f} s" if slowest["finished"] else f"over {pick['regex_deadline_s']:.0f} s"
    rows = [
        ("slowest product regex on 1 MB adversarial input", f"{took}: {slowest['pattern']} on {slowest['input']}"),
        (f"delivery under {listener['connections']:,} idle connections",
         f"first {listener['first_ms']:.0f} ms (accepting the queue ahead of it), then median "
         f"{listener['median_ms']:.1f} ms, max {listener['max_ms']:.1f} ms; {listener['connected']:,} opened in "
         f"{listener['open_seconds']:.1f} s, {listener['closed']} of them closed by then"),
        (f"health listener under {health['connections']:,} idle connections",
         f"threads {health['threads_before']} before, {health['threads_during']} during; /healthz median "
         f"{health['median_ms']:.1f} ms, max {health['max_ms']:.1f} ms; {health['connected']:,} opened in "
         f"{health['open_seconds']:.1f} s, {health['closed']} of them closed by the server by then (it drops a "
         f"connection idle for its read timeout)"),
        (f"other account's delay under a {fair['flood']:,}-delivery flood",
         f"{fair['other_ms']:.0f} ms, written by batch {fair['other_batches']} of {fair['batches']} (a batch of "
         f"{BATCH} {fair['batch_ms']:.0f} ms; the flood drained in {fair['drained_seconds']:.1f} s, {fair['written']:,} "
         f"written); the flooding account's next {fair['tried']}: {fair['throttled']} answered 429 "
         f"(WEBHOOK_MAX_WAITING={fair['cap']:,}) in {fair['throttle_ms']:.0f} ms median"),
    ]
    width = max(len(name) for name, _ in rows)
    lines.append("")
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return lines
