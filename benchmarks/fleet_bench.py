"""`python -m benchmarks.fleet_bench [--accounts 500] [--replicas 3] [--intervals 3] [--quick]`:
many accounts across replica processes (ACCOUNT_SOURCE=mongodb, worker/app.py), end to end.

One fake Bolna in this process serves N accounts of 2 agents each (a few trimmed calls per agent,
a small latency per answer); N `users` documents; R replicas (`main.py run`, each its own process)
against the wire server (or MONGODB_URI), SYNC_INTERVAL_MINUTES=1. Interval 0 holds the first
syncs; intervals 1..K are the steady state (no new calls) the per-account costs are measured on.
Then the replica holding the most leases is SIGKILLed, and the time until its accounts are synced
by another replica is measured against the lease. Prints a table and one JSON line.

Standalone (not a scenario of `python -m benchmarks`): it takes minutes of wall time by nature."""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

from pymongo import MongoClient, monitoring

from benchmarks import fleet_figures as figures
from benchmarks.harness import _HOUSEKEEPING
from benchmarks.replicas import Replica, cpu_seconds, replica_env
from fakes.accounts_dataset import accounts_dataset
from fakes.bolna_server import FakeBolna
from services.database import SYNC_RUNS, ACCOUNT_SCHEDULE
from utils.clock import utcnow
from utils.config import Settings
from utils.table import format_table

INTERVAL = timedelta(minutes=1)
ISOLATED_SYNCS = 10


class NamedCounter(monitoring.CommandListener):
    """Commands by name, and the server's time by command and collection (where a sync's database
    time goes: a command whose time grows with the number of accounts is one that scans)."""

    def __init__(self):
        self.names: Counter = Counter()
        self.micros: Counter = Counter()
        self._targets: dict[int, str] = {}

    def started(self, event):
        if event.command_name not in _HOUSEKEEPING:
            self.names[event.command_name] += 1
            self._targets[event.request_id] = f"{event.command_name} {event.command.get(event.command_name)}"

    def succeeded(self, event):
        target = self._targets.pop(event.request_id, None)
        if target:
            self.micros[target] += event.duration_micros

    def failed(self, event):
        self.succeeded(event)


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - utcnow()).total_seconds()))


def _snapshot(client: MongoClient, fake: FakeBolna, pids: list[int], server_pid: int | None) -> dict:
    status = client.admin.command("serverStatus")
    return {"requests": status.get("network", {}).get("numRequests"), "ops": dict(status.get("opcounters", {})),
            "bolna": fake.request_count(), "cpu": {pid: cpu_seconds(pid) for pid in pids},
            "server_cpu": cpu_seconds(server_pid) if server_pid else None, "at": time.monotonic()}


def _wait_registered(db, replicas: list[Replica], count: int, timeout: float = 180) -> datetime:
    deadline = time.monotonic() + timeout
    while db[ACCOUNT_SCHEDULE].count_documents({}) < count:
        dead = [r for r in replicas if not r.alive()]
        if dead or time.monotonic() > deadline:
            raise RuntimeError("the replicas did not register the accounts; a replica's log:\n"
                               + (dead or replicas)[0].log_tail())
        time.sleep(0.5)
    return min(doc["registeredAt"] for doc in db[ACCOUNT_SCHEDULE].find({}, {"registeredAt": 1}))


def _kill_busiest(db, replicas: list[Replica], timeout: float = 60) -> tuple[Replica, dict, datetime]:
    """SIGKILL the replica holding the most live leases (waiting for one to hold any)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = utcnow()
        held = list(db[ACCOUNT_SCHEDULE].find({"acquired_until": {"$gt": now}}, {"acquired_by": 1}))
        owners = Counter(doc["acquired_by"] for doc in held)
        if owners:
            owner = owners.most_common(1)[0][0]
            victim = next(r for r in replicas if r.pid == int(owner.split(":")[1]))
            victim.kill()
            killed_at = utcnow()
            # What it held at the moment it died (a lease it finished meanwhile is no longer in it).
            leased = {doc["_id"]: doc["acquired_until"] for doc in db[ACCOUNT_SCHEDULE].find(
                {"acquired_by": owner, "acquired_until": {"$gt": killed_at}}, {"acquired_until": 1})}
            if leased:
                return victim, leased, killed_at
            raise RuntimeError("the killed replica held no lease by the time it died; run again")
        time.sleep(0.05)
    raise RuntimeError(f"no replica held a lease within {timeout:.0f} s")


def _wait_taken_over(db, leased: dict, victim: Replica, killed_at: datetime, lease: int, poll: int) -> None:
    deadline = time.monotonic() + lease + 3 * poll + 60
    while time.monotonic() < deadline:
        runs = db[SYNC_RUNS].find({"userId": {"$in": list(leased)}, "job": figures.CRM_SYNC,
                                   "startedAt": {"$gt": killed_at}, "pid": {"$ne": victim.pid}}, {"userId": 1})
        if {run["userId"] for run in runs} >= set(leased):
            return
        time.sleep(0.5)


def _isolated(client_uri: str, database: str, bolna_url: str, fake: FakeBolna) -> dict:
    """Round trips, Bolna requests and seconds of one account sync alone (no other replica, one
    account at a time), counted by pymongo's command monitoring in this process."""
    from worker.app import Runtime

    counter = NamedCounter()
    client = MongoClient(client_uri, tz_aware=False, event_listeners=[counter])
    try:
        db = client[database]
        schedule = db[ACCOUNT_SCHEDULE]
        schedule.update_many({}, {"$set": {"dueAt": utcnow() + timedelta(days=1)}, "$unset": {"acquired_by": "", "acquired_until": "", "acquired_token": ""}})
        chosen = [doc["_id"] for doc in schedule.find({}, {"_id": 1}).sort("_id", 1).limit(ISOLATED_SYNCS)]
        schedule.update_many({"_id": {"$in": chosen}}, {"$set": {"dueAt": utcnow() - timedelta(seconds=1)}})
        settings = Settings(mongodb_db=database, account_source="mongodb", bolna_base_url=bolna_url,
                            sync_interval_minutes=1, account_concurrency=1, account_lease_seconds=20)
        fleet = Runtime(settings, db, mongo_client=client)
        fleet.prepare()
        counter.names.clear()
        counter.micros.clear()
        before, started = fake.request_count(), time.perf_counter()
        synced = fleet.work()
        seconds = time.perf_counter() - started
        names = dict(counter.names.most_common())
        return {"syncs": synced, "round_trips": sum(names.values()) / max(synced, 1),
                "by_command": {name: count / max(synced, 1) for name, count in names.items()},
                "ms_by_command": {target: micros / 1000 / max(synced, 1)
                                  for target, micros in counter.micros.most_common(6)},
                "bolna_requests": (fake.request_count() - before) / max(synced, 1),
                "seconds": seconds / max(synced, 1)}
    finally:
        client.close()


def measure(args, uri: str, server_pid: int | None) -> dict:
    database = f"callsync_fleet_bench_{uuid.uuid4().hex[:8]}"
    accounts = accounts_dataset(args.accounts, 2, args.calls_per_agent, seed=7, transcript_chars=300)
    client = MongoClient(uri, tz_aware=False)
    db = client[database]
    replicas: list[Replica] = []
    fake = FakeBolna.serving(accounts, projection="trimmed", latency=args.latency).start()
    try:
        db["users"].insert_many([{"_id": f"user-{n:05d}", "bolnaApiKey": account.api_key,
                                  "subscription": {"status": "active"}} for n, account in enumerate(accounts)])
        env = replica_env(uri, database, fake.base_url, poll=args.poll, lease=args.lease,
                          concurrency=args.concurrency)
        replicas = [Replica(env) for _ in range(args.replicas)]
        t0 = _wait_registered(db, replicas, args.accounts)
        steady_from, steady_to = t0 + INTERVAL, t0 + (args.intervals + 1) * INTERVAL
        pids = [r.pid for r in replicas]
        _sleep_until(steady_from)
        first = _snapshot(client, fake, pids, server_pid)
        _sleep_until(steady_to)
        last = _snapshot(client, fake, pids, server_pid)
        phases = {doc["_id"]: doc["dueAt"] for doc in db[ACCOUNT_SCHEDULE].find({}, {"dueAt": 1})}
        _sleep_until(steady_to + INTERVAL / 4)  # most of the last slots' runs have started by then
        health = {replica.pid: replica.health() for replica in replicas}
        victim, leased, killed_at = _kill_busiest(db, replicas)
        _wait_taken_over(db, leased, victim, killed_at, args.lease, args.poll)
        read_at = utcnow()
        runs = list(db[SYNC_RUNS].find({}, {"userId": 1, "job": 1, "startedAt": 1, "finishedAt": 1, "pid": 1,
                                            "status": 1}))
        for replica in replicas:
            replica.stop()
        isolated = _isolated(uri, database, fake.base_url, fake)
    except BaseException:
        for replica in replicas:
            if not replica.alive() and not replica.killed:
                print(f"replica {replica.pid} exited; its log:\n{replica.log_tail()}")
        raise
    finally:
        for replica in replicas:
            replica.close()
        fake.stop()
        client.drop_database(database)
        client.close()
    steady = figures.in_window(runs, steady_from, steady_to)
    syncs = len(steady)
    per_sync = lambda value: value / syncs if syncs and value is not None else None  # noqa: E731
    cpu = sum(last["cpu"][pid] - first["cpu"][pid] for pid in pids
              if last["cpu"][pid] is not None and first["cpu"][pid] is not None)
    seconds = figures.sync_seconds([run for run in runs if steady_from <= run["startedAt"] < steady_to])
    return {
        "accounts": args.accounts, "replicas": args.replicas, "intervals": args.intervals,
        "concurrency": args.concurrency, "poll_s": args.poll, "lease_s": args.lease, "latency_ms": args.latency * 1000,
        "coverage": figures.coverage(runs, phases, INTERVAL, t0, args.intervals, read_at),
        "overlaps": figures.overlaps(runs, {victim.pid: killed_at}, read_at),
        "steady_syncs": syncs,
        "per_replica": figures.spread(steady),
        "per_replica_per_interval": syncs / args.replicas / args.intervals,
        "server_requests_per_sync": per_sync(last["requests"] - first["requests"]
                                             if last["requests"] is not None else None),
        "server_ops_per_sync": {name: per_sync(last["ops"][name] - first["ops"].get(name, 0)) for name in last["ops"]},
        "server_ops_per_second": (sum(last["ops"].values()) - sum(first["ops"].values()))
        / max(last["at"] - first["at"], 1e-9),
        "bolna_requests_per_sync": per_sync(last["bolna"] - first["bolna"]),
        "replica_cpu_s_per_sync": per_sync(cpu),
        "server_cpu_s_per_sync": per_sync(last["server_cpu"] - first["server_cpu"]
                                          if last["server_cpu"] is not None and first["server_cpu"] is not None
                                          else None),
        "sync_seconds_p50": figures.percentile(seconds, 0.5), "sync_seconds_p90": figures.percentile(seconds, 0.9),
        "steady_wall_s": last["at"] - first["at"],
        "health": health,
        "takeover": figures.takeover(runs, leased, victim.pid, killed_at),
        "isolated": isolated,
    }


def report(result: dict) -> None:
    fmt = lambda value, spec=".2f": "-" if value is None else format(value, spec)  # noqa: E731
    print(f"\n{result['accounts']} accounts, {result['replicas']} replicas, SYNC_INTERVAL_MINUTES=1, "
          f"ACCOUNT_CONCURRENCY={result['concurrency']}, ACCOUNT_POLL_SECONDS={result['poll_s']}, "
          f"ACCOUNT_LEASE_SECONDS={result['lease_s']}, Bolna latency {result['latency_ms']:.0f} ms\n")
    rows = [[row["interval"] or "0 (first syncs)", row["slots"], row["synced_once"], row["missed"],
             row["twice_or_more"], row["pending"], f"{row['min']}/{row['max']}", fmt(row["lag_p50_s"], ".1f"),
             fmt(row["lag_max_s"], ".1f")] for row in result["coverage"]]
    print(format_table(["interval", "slots", "once", "missed", "twice+", "pending", "min/max", "lag p50 s",
                        "lag max s"], rows))
    takeover, isolated = result["takeover"], result["isolated"]
    lines = [
        ("accounts synced twice at once (overlapping runs)", result["overlaps"]),
        ("account syncs in the steady intervals", result["steady_syncs"]),
        ("  per replica pid", ", ".join(f"{pid}: {n}" for pid, n in result["per_replica"].items())),
        ("  per replica per interval", fmt(result["per_replica_per_interval"], ".0f")),
        ("seconds per account sync, both jobs (p50 / p90)",
         f"{fmt(result['sync_seconds_p50'])} / {fmt(result['sync_seconds_p90'])}"),
        ("replica CPU s per account sync", fmt(result["replica_cpu_s_per_sync"], ".3f")),
        ("wire-server CPU s per account sync", fmt(result["server_cpu_s_per_sync"], ".3f")),
        ("server requests per account sync (all-in)", fmt(result["server_requests_per_sync"], ".1f")),
        ("  opcounters per sync", ", ".join(f"{k} {fmt(v, '.1f')}" for k, v in result["server_ops_per_sync"].items())),
        ("server operations per second", fmt(result["server_ops_per_second"], ".0f")),
        ("Bolna requests per account sync", fmt(result["bolna_requests_per_sync"], ".1f")),
        ("one sync alone: round trips / Bolna req / s",
         f"{fmt(isolated['round_trips'], '.1f')} / {fmt(isolated['bolna_requests'], '.1f')} / "
         f"{fmt(isolated['seconds'])}  ({isolated['syncs']} syncs)"),
        ("  by command", ", ".join(f"{k} {v:.1f}" for k, v in isolated["by_command"].items())),
        ("/healthz before the kill", ", ".join(f"{pid}: {h['code']}" for pid, h in result["health"].items())),
        ("  server ms by command (top)", ", ".join(f"{k} {v:.1f}" for k, v in isolated["ms_by_command"].items())),
        ("SIGKILL: leased accounts taken over", f"{takeover['taken_over']}/{takeover['accounts']}"),
        ("  time to a new run, max / median (lease)",
         f"{fmt(takeover['max_s'], '.1f')} / {fmt(takeover['median_s'], '.1f')} s ({result['lease_s']} s)"),
        ("  after the lease's end, max", f"{fmt(takeover['after_lease_end_max_s'], '.1f')} s"),
    ]
    print()
    print(format_table(["figure", "value"], lines, max_width=120))
    print("\nJSON " + json.dumps(result, default=str, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--intervals", type=int, default=3, help="steady intervals measured after the first")
    parser.add_argument("--calls-per-agent", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.03, help="the fake Bolna's answer delay, seconds")
    parser.add_argument("--concurrency", type=int, default=4, help="ACCOUNT_CONCURRENCY")
    parser.add_argument("--poll", type=int, default=2, help="ACCOUNT_POLL_SECONDS")
    parser.add_argument("--lease", type=int, default=20, help="ACCOUNT_LEASE_SECONDS")
    parser.add_argument("--quick", action="store_true", help="30 accounts, 2 replicas, 1 steady interval")
    args = parser.parse_args(argv)
    if args.quick:
        args.accounts, args.replicas, args.intervals = 30, 2, 1
    logging.disable(logging.WARNING)
    server = None
    uri = os.environ.get("MONGODB_URI", "").strip()
    if not uri:
        from tests.wire_server import PACKAGE, WireServer
        server = WireServer().start()
        uri = server.uri
    print(f"MongoDB: {'the wire server (' + PACKAGE + ', in memory)' if server else 'MONGODB_URI'}; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    try:
        result = measure(args, uri, server.process.pid if server else None)
    finally:
        if server is not None:
            server.close()
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
