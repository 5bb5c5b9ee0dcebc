"""The daemon as a process: SIGTERM mid-run, and refusals at start-up (real subprocesses)."""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from fakes.bolna_server import FakeBolna
from tests.helpers import AGENT, execution, wait_until
from worker.daemon import EXIT_FORCED, EXIT_RESTART

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
TOTAL_CALLS = 60
PAGE_SIZE = 5

# The real daemon code (`run_daemon`) on an in-memory MongoDB, which only this process can read:
# after the daemon returns, the script prints what was stored as one `STORED {...}` line.
DAEMON = """
import json, sys
from fakes.mongo_hooks import HookedClient
from utils.config import Settings
from utils.logging import setup_logging
from worker.app import Runtime
from worker.daemon import run_daemon

settings = Settings(**json.loads(sys.argv[1]))
setup_logging(fmt="json", secrets=(settings.bolna_api_key,))
app = Runtime.build(settings, mongo_client=HookedClient())
app.prepare()
code = run_daemon(app)
stored = {
    "runs": list(app.db.sync_runs.find({}, {"job": 1, "status": 1, "counts": 1, "errors": 1})),
    "callIds": [c["callId"] for c in app.db.calls.find()],
    "customerCallIds": [link["_id"] for link in app.db.customer_calls.find({"applied": True})],
    "cursors": [s["cursor"].isoformat() for s in app.db.sync_state.find({"job": {"$exists": True}})],
}
print("STORED " + json.dumps(stored, default=str), flush=True)
sys.exit(code)
"""


class Daemon:
    """A subprocess whose stdout lines are collected by a thread, so reading never blocks."""

    def __init__(self, args: list[str], env: dict | None = None):
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for_line(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line containing {needle!r} in {self.seen}")


@pytest.fixture
def slow_bolna():
    calls = [execution(f"+91987654{n:04d}", minutes_ago=5 + n, call_id=f"c-{n:03d}") for n in range(TOTAL_CALLS)]
    # Every page takes 0.15 s: a run over 12 pages is still going when the signal comes.
    with FakeBolna([AGENT], calls, api_key="service-key", latency=0.15) as server:
        yield server, calls


def start_daemon(bolna, **settings) -> Daemon:
    """The daemon over `bolna`, the service's settings with `settings` over them."""
    settings = {"mongodb_db": "callsync", "bolna_api_key": "service-key", "bolna_base_url": bolna.base_url,
                "bolna_page_size": PAGE_SIZE, "backfill_days": 8, "http_backoff_seconds": 0.01, **settings}
    return Daemon([sys.executable, "-c", DAEMON, json.dumps(settings)])


def past_the_first_pages(bolna) -> bool:
    """Both jobs are past their first page (they ask for the same pages, one each)."""
    return sum(r.query.get("page_number") == "2" for r in bolna.requests) >= 2


def test_sigterm_during_a_run_exits_0_after_writing_whole_pages(slow_bolna):
    bolna, calls = slow_bolna
    daemon = start_daemon(bolna, health_port=0)
    try:
        listening = json.loads(daemon.wait_for_line('"health_listening"'))
        health_url = re.search(r"http://[\d.:]+", listening["message"]).group(0) + "/healthz"
        wait_until(lambda: past_the_first_pages(bolna))
        with urllib.request.urlopen(health_url, timeout=5) as response:
            assert response.status == 200  # scheduling, and a fresh start has time for its first runs
        # No run has finished yet: the queue's depth was read by the daemon's refresh job.
        with urllib.request.urlopen(health_url.replace("/healthz", "/metrics"), timeout=5) as response:
            assert b"\ncallsync_analysis_queue_depth " in response.read()

        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=40) == 0
        stored = json.loads(daemon.wait_for_line("STORED ").removeprefix("STORED "))
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
    stderr = daemon.process.stderr.read()
    assert "Traceback" not in stderr, stderr
    events = [json.loads(line).get("event") for line in daemon.seen if line.startswith("{")]
    assert "shutdown" in events and "daemon_stopped" in events

    runs = {run["job"]: run for run in stored["runs"]}
    assert set(runs) == {"crm_sync", "call_processor"} and len(stored["runs"]) == 2
    for run in runs.values():
        # Ended by the signal, recorded as such, and not left `running`.
        assert run["status"] == "partial"
        assert "interrupted" in {error["code"] for error in run["errors"]}
    # No half-written page: every call of every page fetched was stored, and the runs stopped early.
    fetched = runs["call_processor"]["counts"]["fetched"]
    assert len(stored["callIds"]) == fetched < TOTAL_CALLS and fetched % PAGE_SIZE == 0
    assert len(stored["customerCallIds"]) == runs["crm_sync"]["counts"]["fetched"] < TOTAL_CALLS
    # The next start resumes from the cursors: nothing older than a cursor is missing.
    missing = [call for call in calls if call["id"] not in stored["callIds"]]
    oldest_missing = min(datetime.fromisoformat(call["created_at"]).replace(tzinfo=None) for call in missing)
    assert all(datetime.fromisoformat(cursor) <= oldest_missing for cursor in stored["cursors"])


def test_a_second_sigterm_stops_at_once_without_waiting_for_the_running_job(slow_bolna):
    bolna, _calls = slow_bolna
    daemon = start_daemon(bolna)
    try:
        wait_until(lambda: past_the_first_pages(bolna))
        bolna.latency = 60.0  # the requests in flight now outlast the 30 s grace of a clean stop
        daemon.process.send_signal(signal.SIGTERM)
        daemon.wait_for_line('"shutdown"')
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
    daemon.wait_for_line('"shutdown_forced"', timeout=30)
    events = [json.loads(line).get("event") for line in daemon.seen if line.startswith("{")]
    assert "daemon_stopped" not in events
    assert "Traceback" not in daemon.process.stderr.read()


def test_sighup_stops_cleanly_with_the_restart_code(slow_bolna):
    bolna, _calls = slow_bolna
    daemon = start_daemon(bolna)
    try:
        wait_until(lambda: past_the_first_pages(bolna))
        daemon.process.send_signal(signal.SIGHUP)
        # The same clean stop as SIGTERM, and an exit code that systemd's Restart=on-failure restarts.
        assert daemon.process.wait(timeout=40) == EXIT_RESTART
        stored = json.loads(daemon.wait_for_line("STORED ").removeprefix("STORED "))
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
    assert "Traceback" not in daemon.process.stderr.read()
    events = [json.loads(line).get("event") for line in daemon.seen if line.startswith("{")]
    assert "shutdown" in events and "daemon_stopped" in events
    assert {run["status"] for run in stored["runs"]} == {"partial"}  # interrupted, recorded, not left running


def test_a_job_stuck_past_the_grace_period_is_a_failure_exit(slow_bolna):
    bolna, _calls = slow_bolna
    release = threading.Event()
    bolna.on_answer(r"/executions$", lambda: release.wait(30))  # a response that does not come
    daemon = start_daemon(bolna, http_timeout_seconds=40, shutdown_grace_seconds=1)
    try:
        wait_until(lambda: bolna.request_count("/v2/agent/agent-1/executions") >= 1)
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=20) == EXIT_FORCED != 0
    finally:
        release.set()
        if daemon.process.poll() is None:
            daemon.process.kill()
    daemon.wait_for_line('"shutdown_timeout"', timeout=30)
    assert "Traceback" not in daemon.process.stderr.read()


def run_main(*args: str, **variables: str) -> subprocess.CompletedProcess:
    # Empty values count as unset and keep a developer's .env from filling them in.
    env = {"PATH": os.environ["PATH"], "MONGODB_URI": "", "BOLNA_API_KEY": "", **variables}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", ["run", "once"])
def test_run_and_once_refuse_without_mongodb_uri(command):
    result = run_main(command, BOLNA_API_KEY="some-key")
    assert result.returncode == 2
    assert result.stderr.startswith("callsync: MONGODB_URI is not set")
    assert "main.py demo" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["run", "once"])
def test_run_and_once_of_the_environments_account_refuse_without_bolna_api_key(command):
    result = run_main(command, MONGODB_URI="mongodb://localhost:1")
    assert result.returncode == 2
    assert result.stderr.startswith("callsync: BOLNA_API_KEY is not set")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_setting_is_one_line_naming_the_variable():
    result = run_main("run", MONGODB_URI="mongodb://localhost:1", BOLNA_API_KEY="k", HEALTH_PORT="http")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("callsync: HEALTH_PORT is invalid")
    assert "Traceback" not in result.stderr


def test_an_unreachable_mongodb_is_one_line_and_a_failure_exit_without_the_password():
    uri = "mongodb://callsync:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    result = run_main("once", MONGODB_URI=uri, BOLNA_API_KEY="k")
    assert result.returncode == 1
    assert result.stderr.startswith("callsync: MongoDB is not reachable (MONGODB_URI): 127.0.0.1:1")
    assert result.stderr.count("\n") == 1 and "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("uri,reason", [
    ("mongodb://localhost:99999", "Port must be an integer between 0 and 65535"),
    ("mongodb://", "Must provide at least one hostname or IP"),
    ("mongodb://callsync:p@ss@db.example/", "Username and password must be escaped"),
    ("mongodb://db.example/?serverSelectionTimeoutMS=soon", "must be an integer or float"),
])
def test_a_malformed_mongodb_uri_is_one_line_with_the_reason_and_exit_2(uri, reason):
    result = run_main("once", MONGODB_URI=uri, BOLNA_API_KEY="k")
    assert result.returncode == 2
    assert result.stderr.startswith("callsync: MONGODB_URI is invalid: ") and reason in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "p@ss" not in result.stderr


def test_an_unreachable_server_is_reported_within_seconds_without_a_timeout_in_the_uri():
    started = time.monotonic()
    result = run_main("once", MONGODB_URI="mongodb://127.0.0.1:1/", BOLNA_API_KEY="k")
    assert result.returncode == 1 and result.stderr.startswith("callsync: MongoDB is not reachable (MONGODB_URI)")
    assert time.monotonic() - started < 25  # the driver's own default would be 30 s


def test_status_without_a_server_says_what_status_does():
    result = run_main("status")
    assert result.returncode == 2 and "`status` reads the database" in result.stderr
    assert "writes to MongoDB" not in result.stderr


def test_the_env_file_is_read_from_the_working_directory(tmp_path):
    (tmp_path / ".env").write_text("MONGODB_URI=mongodb://127.0.0.1:1/\nHEALTH_PORT=http\n")
    env = {"PATH": os.environ["PATH"]}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("callsync: HEALTH_PORT is invalid")


def test_the_demo_places_contacts_in_its_pipeline_and_shows_what_was_held_back():
    result = run_main("demo")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "placed in the 'Sales' pipeline" in result.stdout
    assert "score_range" in result.stdout and "status" in result.stdout
    assert "blocked move: +919740055667 stays in Negotiation, not New Lead" in result.stdout
    blocked = [line for line in result.stdout.splitlines() if line.startswith("blocked move: ")]
    # Each a real downgrade (or a WON kept): a contact without a stage is placed, never blocked.
    assert len(blocked) >= 2 and all(" stays in " in line for line in blocked)
    assert "held back: +919876543210's tag -> Interested (locked by a person" in result.stdout


def test_the_accounts_demo_keeps_each_accounts_records_apart():
    result = run_main("demo", "--accounts", "2")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Demo: 2 accounts of 2 agents each in `users`")
    assert [line.split(":")[0] for line in lines[2:6]] == [
        "acct-0000 run crm_sync", "acct-0000 run call_processor", "acct-0001 run crm_sync",
        "acct-0001 run call_processor"]
    assert any(" is in both acct-0000 and acct-0001: stored 2 times, once per account" in line for line in lines)
    assert "callsync accounts at" in result.stdout and "2 in the schedule" in result.stdout


@pytest.mark.parametrize("args, variables, says", [
    (("review",), {"ACCOUNT_SOURCE": "mongodb"}, "ACCOUNT_SOURCE=mongodb: name the account with --account ID"),
    (("reanalyze", "--call-id", "c1"), {"ACCOUNT_SOURCE": "mongodb"}, "name the account with --account ID"),
    (("forget", "--phone", "+919876543210", "--dry-run"), {"ACCOUNT_SOURCE": "mongodb"},
     "name the account with --account ID"),
    (("status", "--account", "a1"), {}, "--account names one of many accounts: it needs ACCOUNT_SOURCE=mongodb"),
    (("webhook-url", "--account", "a1"), {}, "--account names one of many accounts"),
    (("webhook-url",), {"ACCOUNT_SOURCE": "mongodb", "WEBHOOK_PUBLIC_URL": "https://hooks.example.com",
                        "WEBHOOK_TOKEN": "t" * 32}, "ACCOUNT_SOURCE=mongodb: name the account with --account ID"),
])
def test_the_account_a_command_is_about_is_checked_before_the_database_is_reached(args, variables, says):
    # A port nothing listens on: the command must refuse before it would try to connect.
    result = run_main(*args, MONGODB_URI="mongodb://127.0.0.1:1/", **variables)
    assert result.returncode == 2 and result.stderr.startswith("callsync: ") and says in result.stderr
    assert "Traceback" not in result.stderr
