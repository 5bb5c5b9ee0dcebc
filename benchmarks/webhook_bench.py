"""`python -m benchmarks.webhook_bench [--deliveries N] [--senders K] [--wire-server]`: Bolna
webhook deliveries against the real listener (waitress on 127.0.0.1) and processor: deliveries
accepted per second, and the time from a delivery's POST to its customer's write (`customers.
updatedAt`), p50 and p99. Beside it, what the poll gives for the same: a call finalized at a random
moment waits for the next run, so up to SYNC_INTERVAL_MINUTES.

Standalone (not a scenario of `python -m benchmarks`), so it runs without touching that table."""
from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from datetime import timedelta

import mongomock
import requests
from pymongo import MongoClient

from benchmarks.harness import CountedMongo, wire_server_if
from fakes.bolna_server import FakeBolna
from fakes.dataset import iso
from fakes.mongo_hooks import HookedClient
from services.database import CUSTOMERS, WEBHOOK_INBOX
from tests.helpers import AGENT, execution
from utils.clock import utcnow
from utils.config import Settings
from worker.app import Runtime
from worker.webhook_listener import PATH_PREFIX, serve_webhooks

TOKEN = "bench_" + "0123456789abcdef" * 2
DATABASE = "callsync_webhook_bench"


def _record(n: int) -> dict:
    created = utcnow() - timedelta(minutes=5)
    record = execution(f"+9198{n:08d}", call_id=f"wh-{n}", extracted={"user_interested": True, "name": "Ravi"})
    record.update(created_at=iso(created), updated_at=iso(created + timedelta(minutes=3)))
    return record


def _send(url: str, numbers: range, sent_at: dict[str, object], interval: float) -> None:
    """Each delivery `interval` seconds after the previous one started (0: as fast as answered)."""
    with requests.Session() as session:
        next_at = time.perf_counter()
        for n in numbers:
            time.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += interval
            record = _record(n)
            body = json.dumps(record)
            sent_at[record["id"]] = utcnow()
            answer = session.post(url, data=body, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(f"delivery {n} answered {answer.status_code}")


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def run(deliveries: int, senders: int, mongo_client, rate: float | None = None) -> dict:
    """`rate`: deliveries per second over all senders; None: a burst, each sender as fast as it can."""
    settings = Settings(mongodb_db=DATABASE, bolna_api_key="bench-key", webhook_port=0, webhook_token=TOKEN,
                        webhook_allowed_ips=("127.0.0.1",))
    with FakeBolna([AGENT], [], api_key="bench-key") as bolna:
        app = Runtime.build(settings.with_overrides(bolna_base_url=bolna.base_url), mongo_client=mongo_client)
        app.prepare()
        service = serve_webhooks(app)
        host, port = service.address
        url = f"http://{host}:{port}{PATH_PREFIX}{TOKEN}"
        sent_at: dict[str, object] = {}
        share = -(-deliveries // senders)
        threads = [threading.Thread(target=_send, args=(url, range(k * share, min(deliveries, (k + 1) * share)),
                                                         sent_at, senders / rate if rate else 0.0))
                   for k in range(senders)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted_seconds = time.perf_counter() - started
        while app.db[WEBHOOK_INBOX].count_documents({"state": "waiting"}):
            time.sleep(0.05)
        drained_seconds = time.perf_counter() - started
        service.stop()
        written = {doc["lastCallId"]: doc["updatedAt"] for doc in app.db[CUSTOMERS].find({}, {"lastCallId": 1,
                                                                                            "updatedAt": 1})}
    # The customer's updatedAt is millisecond-precise, as stored; a delivery's send time likewise.
    lags = sorted(max(0.0, (written[call_id] - at).total_seconds()) for call_id, at in sent_at.items())
    return {"deliveries": deliveries, "senders": senders, "accepted_per_second": deliveries / accepted_seconds,
            "processed_per_second": deliveries / drained_seconds, "customers": len(written),
            "p50_ms": 1000 * _percentile(lags, 0.50), "p99_ms": 1000 * _percentile(lags, 0.99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhook_bench", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=4, help="concurrent clients, each one keep-alive connection")
    parser.add_argument("--rate", type=float, help="deliveries per second (default: a burst, as fast as answered)")
    parser.add_argument("--wire-server", action="store_true", help="start the test run's wire server and use it")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    with wire_server_if(args.wire_server):
        uri = CountedMongo.server_uri()
        client = MongoClient(uri, tz_aware=False) if uri else HookedClient(mongomock.MongoClient())
        try:
            if uri:
                client.drop_database(DATABASE)
            result = run(args.deliveries, args.senders, client, args.rate)
        finally:
            if uri:
                client.drop_database(DATABASE)
            client.close()
    interval = Settings().sync_interval_minutes * 60
    print(f"MongoDB: {'wire server' if args.wire_server else ('MONGODB_URI' if uri else 'mongomock')}; "
          f"{os.cpu_count()} cores")
    pace = f"at {args.rate:g}/s" if args.rate else "in a burst"
    print(f"{result['deliveries']} deliveries {pace} from {result['senders']} senders: "
          f"{result['accepted_per_second']:,.0f} accepted/s, all written at {result['processed_per_second']:,.0f}/s; "
          f"delivery -> customers write p50 {result['p50_ms']:,.0f} ms, p99 {result['p99_ms']:,.0f} ms "
          f"({result['customers']} customers)")
    print(f"poll alone (SYNC_INTERVAL_MINUTES={interval // 60}): a call finalized at a random moment waits "
          f"p50 {interval / 2:.0f} s, p99 {interval * 0.99:.0f} s for the next run, plus that run's own time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
