"""Many accounts across real replica processes (`main.py run` with ACCOUNT_SOURCE=mongodb) on the
wire server (tests.real_mongo): a replica killed mid-sync is taken over once its leases run out,
two live replicas never sync one account at once, and the CLI (`once`, `status`) with many
accounts. tests/test_fleet.py covers the same rules in one process with a test clock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from fakes.accounts_dataset import accounts_dataset
from fakes.bolna_api import RateLimits
from fakes.bolna_server import FakeBolna
from services.database import SYNC_RUNS, ACCOUNT_SCHEDULE
from services.accounts.schedule import AccountSchedule
from services.accounts.source import Account
from worker.webhook_listener import account_token
from tests.conftest import RAISED_LIMITS
from tests.helpers import execution
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from utils.clock import utcnow
from worker.app import CALL_PROCESSOR, CRM_SYNC

ROOT = Path(__file__).resolve().parent.parent
LEASE, POLL, INTERVAL_MINUTES = 15, 1, 5
SLACK = 5  # seconds: the heir's start-up and a pass still busy with other accounts
ACTIVE = {"subscription": {"status": "active"}}


class Replica:
    """`main.py <command>` as a process of its own; a `run` is ready once it logged daemon_started."""

    def __init__(self, env: dict, *args: str):
        self.process = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        self.lines: list[str] = []
        self.started = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()  # the pipe never fills

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if '"daemon_started"' in line:
                self.started.set()

    def wait_started(self, timeout: float = 60) -> "Replica":
        assert self.started.wait(timeout), f"not started (exit {self.process.poll()}): {self.lines[-5:]}"
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture
def fleet(mongo, mongodb_uri):  # noqa: F811
    """fleet(n, latency) -> (db, env, accounts, bolna): n active accounts in `users` served by one
    fake Bolna, their database dropped and any replica still alive killed afterwards."""
    database = f"callsync_fleet_{uuid.uuid4().hex[:8]}"
    started: list = []

    def make(n: int, latency: float = 0.0, calls_per_agent: int = 6):
        accounts = accounts_dataset(n, agents_per_account=1, calls_per_agent=calls_per_agent, shared=False)
        bolna = FakeBolna.serving(accounts, latency=latency, projection="trimmed",
                                  rate_limits=RateLimits(**RAISED_LIMITS)).start()
        started.append(bolna)
        db = mongo[database]
        db["users"].insert_many([{"_id": a.label, "bolnaApiKey": a.api_key, **ACTIVE} for a in accounts])
        env = {**os.environ, "MONGODB_URI": mongodb_uri, "MONGODB_DB": database, "BOLNA_BASE_URL": bolna.base_url,
               "BOLNA_API_KEY": "", "GROQ_API_KEY": "", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
               "ACCOUNT_SOURCE": "mongodb", "ACCOUNT_LEASE_SECONDS": str(LEASE), "ACCOUNT_POLL_SECONDS": str(POLL),
               "ACCOUNT_CONCURRENCY": "2", "SYNC_INTERVAL_MINUTES": str(INTERVAL_MINUTES),
               "HTTP_BACKOFF_SECONDS": "0.05", "BOLNA_LISTING_RATE_PER_MINUTE": str(RAISED_LIMITS["listing"]),
               "BOLNA_RATE_PER_MINUTE": str(RAISED_LIMITS["other"])}
        return db, env, accounts, bolna

    def replica(env: dict, *args: str) -> Replica:
        started.append(Replica(env, *args))
        return started[-1]

    make.replica = replica
    yield make
    for thing in started:
        if isinstance(thing, Replica):
            if thing.process.poll() is None:
                thing.process.kill()
                thing.process.wait(10)
        else:
            thing.stop()
    mongo.drop_database(database)


def all_due_now(db, accounts) -> None:
    """Registers the accounts as a replica's first register would, but as if an interval and more
    ago: every first due time (spread over one interval from then) is in the past, so every
    account is due when the replicas start, and the replicas' own register then finds them listed
    with the same key fingerprint and changes nothing. (Setting `dueAt` after a replica registered
    them would race with its first claims.)"""
    past = utcnow() - timedelta(minutes=2 * INTERVAL_MINUTES)
    schedule = AccountSchedule(db[ACCOUNT_SCHEDULE], "test", LEASE, INTERVAL_MINUTES * 60, clock=lambda: past)
    schedule.register([(a.label, Account(a.label, bolna_api_key=a.api_key).key_fingerprint) for a in accounts])


def wait_until(condition, timeout: float, what: str):
    give_up = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < give_up, f"not reached in {timeout:g} s: {what}"
        time.sleep(0.1)
    return result


def runs_of(db, **query) -> list[dict]:
    return list(db[SYNC_RUNS].find(query, {"userId": 1, "job": 1, "pid": 1, "status": 1, "startedAt": 1,
                                           "finishedAt": 1}).sort("startedAt", 1))


def every_account_synced(db, accounts) -> bool:
    done = {(run["userId"], run["job"]) for run in runs_of(db, status={"$nin": ["running", "abandoned"]})}
    return all((a.label, job) in done for a in accounts for job in (CRM_SYNC, CALL_PROCESSOR))


@pytest.mark.timeout(240)
def test_a_replica_killed_mid_sync_is_taken_over_within_one_lease(fleet):
    # 0.15 s per request: each account's sync takes a few seconds, so A dies in the middle of one.
    db, env, accounts, _bolna = fleet(6, latency=0.15)
    all_due_now(db, accounts)
    dead = fleet.replica(env, "run").wait_started()
    owned_by_dead = {"acquired_by": {"$regex": f":{dead.pid}:"}}
    wait_until(lambda: db[ACCOUNT_SCHEDULE].count_documents(owned_by_dead) == 2
               and len(runs_of(db, pid=dead.pid, status="running")) == 2, 60, "the first replica syncing two accounts")
    assert dead.stop(signal.SIGKILL, 10) == -signal.SIGKILL
    killed_at = utcnow()
    # What the dead replica left: its leases (never renewed again) and its runs still `running`.
    held = {doc["_id"]: doc["acquired_until"] for doc in db[ACCOUNT_SCHEDULE].find(owned_by_dead)}
    assert len(held) == 2
    left_running = runs_of(db, pid=dead.pid, status="running")
    assert {run["userId"] for run in left_running} == set(held)  # mid-sync: one open run per held account

    heir = fleet.replica(env, "run").wait_started()
    # The heir's start-up marks the runs of a dead process of its own host at once (no stale period: that
    # is for runs of other hosts, RunRecords.mark_abandoned).
    assert {run["status"] for run in runs_of(db, _id={"$in": [r["_id"] for r in left_running]})} == {"abandoned"}
    wait_until(lambda: every_account_synced(db, accounts), LEASE + 90, "every account synced")
    assert heir.stop() == 0

    for account, until in held.items():
        first = runs_of(db, userId=account, job=CRM_SYNC, pid=heir.pid)[0]
        assert first["status"] == "ok"
        assert first["startedAt"] >= until  # never while the dead replica's lease held: not synced twice at once
        assert first["startedAt"] <= killed_at + timedelta(seconds=LEASE + POLL + SLACK)  # about one lease
    # Every account was synced once per job in the end, by the dead replica (before it died) or its heir.
    finished = runs_of(db, status={"$ne": "abandoned"})
    assert sorted((run["userId"], run["job"]) for run in finished) == sorted(
        (a.label, job) for a in accounts for job in (CRM_SYNC, CALL_PROCESSOR))
    assert {run["pid"] for run in finished} <= {dead.pid, heir.pid}


@pytest.mark.timeout(240)
def test_two_live_replicas_never_sync_one_account_at_once(fleet):
    db, env, accounts, _bolna = fleet(8, latency=0.05)
    all_due_now(db, accounts)
    replicas = [fleet.replica(env, "run"), fleet.replica(env, "run")]  # started together, on all due accounts
    for replica in replicas:
        replica.wait_started()
    wait_until(lambda: every_account_synced(db, accounts), 150, "every account synced")
    assert [replica.stop() for replica in replicas] == [0, 0]  # a clean stop

    runs = runs_of(db)
    assert sorted((run["userId"], run["job"]) for run in runs) == sorted(
        (a.label, job) for a in accounts for job in (CRM_SYNC, CALL_PROCESSOR))  # once each, never twice
    assert {run["status"] for run in runs} == {"ok"}
    for account in accounts:
        crm, calls = (next(r for r in runs if r["userId"] == account.label and r["job"] == job)
                      for job in (CRM_SYNC, CALL_PROCESSOR))
        assert crm["pid"] == calls["pid"] and crm["finishedAt"] <= calls["startedAt"]
    # Each replica syncs 2 accounts at a time for a second or so each: with 8 accounts, both
    # replicas get some, even when one starts a little before the other, and they ran side by side.
    assert {run["pid"] for run in runs} == {replica.pid for replica in replicas}
    spans = [(min(r["startedAt"] for r in runs if r["pid"] == replica.pid),
              max(r["finishedAt"] for r in runs if r["pid"] == replica.pid)) for replica in replicas]
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, text=True, capture_output=True,
                          timeout=120)


def run_records(result: subprocess.CompletedProcess) -> list[dict]:
    """`once`'s stdout: one run record a line, and nothing else (its logs go to stderr)."""
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all("timestamp" not in record and "job" in record for record in records), result.stdout[-2000:]
    return records


@pytest.mark.timeout(240)
def test_the_cli_with_many_accounts_and_a_refused_key(fleet):
    db, env, accounts, _bolna = fleet(4)
    *first, late = accounts
    db["users"].delete_one({"_id": late.label})  # listed later, beside the refused account
    keys = [a.api_key for a in accounts] + ["bn-unknown-to-bolna"]

    once = cli(env, "once")
    assert once.returncode == 0, once.stdout[-3000:]
    records = run_records(once)
    assert sorted((r["userId"], r["job"]) for r in records) == sorted(
        (a.label, job) for a in first for job in (CRM_SYNC, CALL_PROCESSOR))
    assert {r["status"] for r in records} == {"ok"}

    # A refused key (the fake answers 403) and a good account listed since: the refused one stops
    # after one request and is set aside, the other is synced in the same pass. The exit code is 1,
    # as README documents for `once` ("exit 1 if one failed"): the refused run is `failed`.
    db["users"].insert_many([{"_id": late.label, "bolnaApiKey": late.api_key, **ACTIVE},
                             {"_id": "revoked", "bolnaApiKey": "bn-unknown-to-bolna", **ACTIVE}])
    again = cli(env, "once")
    records = {(r["userId"], r["job"]): r for r in run_records(again)}
    assert sorted(records) == sorted([(late.label, CRM_SYNC), (late.label, CALL_PROCESSOR), ("revoked", CRM_SYNC)])
    assert records[(late.label, CRM_SYNC)]["status"] == records[(late.label, CALL_PROCESSOR)]["status"] == "ok"
    assert [e["code"] for e in records[("revoked", CRM_SYNC)]["errors"]] == ["bolna_key_refused"]
    assert again.returncode == 1

    table = cli(env, "status")
    assert table.returncode == 0, table.stderr
    assert all(a.label in table.stdout for a in accounts)
    assert next(line for line in table.stdout.splitlines() if line.startswith("revoked")).split()[1] == "refused"
    as_json = cli(env, "status", "--json")
    overview = json.loads(as_json.stdout)
    assert overview["total"] == 5 and overview["accounts"]["refused"] == 1
    assert {row["account"]: row["state"] for row in overview["listed"]}["revoked"] == "refused"

    one = cli(env, "status", "--account", late.label, "--json")
    assert one.returncode == 0, one.stderr
    mine = json.loads(one.stdout)
    assert mine["totals"]["calls"] == db["calls"].count_documents({"userId": late.label}) > 0  # its view only
    assert mine["jobs"][CRM_SYNC]["lastRun"]["status"] == "ok"
    text = cli(env, "status", "--account", late.label)
    assert text.returncode == 0 and CRM_SYNC in text.stdout

    missing = cli(env, "status", "--account", "nope")
    assert missing.returncode == 2 and "no account 'nope'" in missing.stderr

    for shown in (once, again, table, as_json, one, text, missing):
        for key in keys:
            assert key not in shown.stdout and key not in shown.stderr


@pytest.mark.timeout(120)
def test_a_replica_writes_each_accounts_webhook_deliveries_into_that_account(fleet):
    db, env, accounts, _bolna = fleet(2, calls_per_agent=1)
    token = "tok_" + "0123456789abcdef" * 2
    replica = fleet.replica({**env, "WEBHOOK_PORT": "0", "WEBHOOK_TOKEN": token,
                             "WEBHOOK_ALLOWED_IPS": "127.0.0.1"}, "run").wait_started()
    listening = wait_until(lambda: next((json.loads(line) for line in replica.lines
                                         if '"webhook_listening"' in line), None), 30, "the listener's address")
    base = listening["message"].split(" on ", 1)[1].split("/webhooks/", 1)[0]
    for account in accounts:
        delivered = execution(call_id="hooked-call", customer="+91 98765 43210")
        answer = requests.post(f"{base}/webhooks/bolna/{account_token(token, account.label)}",
                               json=delivered, timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})

    wait_until(lambda: db["calls"].count_documents({"callId": "hooked-call"}) == 2, 30, "both deliveries written")
    assert {call["userId"] for call in db["calls"].find({"callId": "hooked-call"})} == {a.label for a in accounts}
    assert replica.stop() == 0
    logged = "".join(replica.lines)
    assert token not in logged and not any(account_token(token, a.label) in logged for a in accounts)
