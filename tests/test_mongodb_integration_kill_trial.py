"""Issue 23's trial as a new user would make it, through the CLI on the wire server: `main.py run`
SIGKILLed at seeded moments during the sync (a Bolna request in flight, or a page's CRM writes just
begun) and during the analyzer (a Groq request in flight, other analyses being written), restarted
each time, then `main.py once` until a run changes nothing.
Every invariant of the model test (tests/test_invariants_model.py) must then hold exactly: every
call Bolna holds stored once in its final state, callCount exact, one `ai_analysis` activity per
call and round with the contact on its newest analysis, and the `status_change` audit a complete
chain ending at each customer's status.

A request-triggered kill comes from the fake server's own handler when the chosen request arrives,
so it falls mid-job by construction (no timer races the daemon); a write-triggered one as soon as
the test sees the CRM sync's links grow past the chosen count. Every wait has a timeout.

A trial samples moments, it does not try every write (the model test does): a hole whose window
is one write is found by some seeds' timings, not all. Breaking `resume` (a settled analysis never
written to the CRM) failed every run; marking a page's links applied before its customers' upsert
failed about one run in three."""
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.real_mongo import mongo  # noqa: F401 - `mongo`: the fixture, on the server
from fakes.bolna_server import FakeBolna
from fakes.dataset import generate
from fakes.groq_server import FakeGroq
from services.database import CALLS, CUSTOMER_CALLS, SYNC_RUNS
from tests.test_faults_mongo import expire_claims, snapshot
from tests.test_invariants_model import check_exact
from tests.test_mongodb_integration import ROOT, _daemon_env

pytestmark = pytest.mark.timeout(240)

SEED = 23
# Where each SIGKILL falls: the n-th request (counted from the restart) to Bolna's listings and
# records, or to Groq; or ("links") once the CRM sync has linked n more calls. A restarted sync
# resumes from its cursors but still pages and fetches a hundred records or more, and each analyzer
# restart has a hundred calls or more left: every n below is reached mid-job.
KILLS = (("bolna", 5, 80), ("links", 5, 30), ("links", 5, 30), ("bolna", 5, 60), ("links", 5, 30),
         ("groq", 1, 30), ("groq", 1, 30), ("groq", 1, 30))
KILL_WAIT_SECONDS = 90  # the chosen moment never came: the test fails, it does not hang
MAX_ONCE_RUNS = 6


def _env(bolna: FakeBolna, groq: FakeGroq, uri: str, database: str) -> dict:
    return {**_daemon_env(bolna, uri, database), "GROQ_API_KEY": "groq-key", "GROQ_BASE_URL": groq.base_url,
            "LLM_BATCH_MODE": "off", "LLM_CONCURRENCY": "4"}


def _kill_at(fake, nth: int, pid: int) -> None:
    """SIGKILL `pid` when the `nth` next request reaches `fake`, while that request is in flight."""
    left = [nth]

    def count() -> None:
        left[0] -= 1
        if left[0] == 0:
            os.kill(pid, signal.SIGKILL)
        else:
            arm()

    def arm() -> None:
        if isinstance(fake, FakeBolna):
            fake.on_request(r"^/(v2/agent/[^/]+/)?executions", count)
        else:
            fake.on_request(count)
    arm()


def _kill_when_linked(db, links: int, daemon: subprocess.Popen) -> None:
    """SIGKILL `daemon` as soon as the CRM sync is seen to have linked `links` calls to customers:
    in the middle of that page's writes (links, customers, status audit, links applied)."""
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while db[CUSTOMER_CALLS].count_documents({}) < links and daemon.poll() is None:
        if time.monotonic() > deadline:
            daemon.kill()
            daemon.wait(timeout=10)
            pytest.fail(f"the CRM sync never linked {links} calls within {KILL_WAIT_SECONDS} s")
        time.sleep(0.002)
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGKILL)


def _once_until_quiet(env: dict, db) -> int:
    """`main.py once` until a run leaves the CRM as it found it; returns how many runs that took."""
    before = snapshot(db)
    for runs in range(1, MAX_ONCE_RUNS + 1):
        subprocess.run([sys.executable, "main.py", "once"], cwd=ROOT, env=env, check=True, timeout=120,
                       capture_output=True)
        after = snapshot(db)
        if after == before:
            return runs
        before = after
    raise AssertionError(f"{MAX_ONCE_RUNS} runs of `main.py once` and the CRM still changes")


def test_daemon_killed_during_sync_and_analysis_then_run_once_until_quiet_loses_nothing(mongo, mongodb_uri):
    rng = random.Random(SEED)
    agents, executions = generate(agents=3, per_agent=70, seed=SEED, span_days=5)
    database = f"callsync_kill_trial_{uuid.uuid4().hex[:8]}"
    db = mongo[database]
    # Trimmed listings (one record request per call): the sync makes many requests to be killed
    # at. Slow LLM answers: several analyses are in flight, or being written, when one is killed.
    with FakeBolna(agents, executions, api_key="k", projection="trimmed") as bolna, \
            FakeGroq(latency=0.02) as groq:
        env = _env(bolna, groq, mongodb_uri, database)
        fakes = {"bolna": bolna, "groq": groq}
        try:
            for service, low, high in KILLS:
                nth = rng.randint(low, high)
                daemon = subprocess.Popen([sys.executable, "main.py", "run"], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if service == "links":
                    _kill_when_linked(db, db[CUSTOMER_CALLS].count_documents({}) + nth, daemon)
                else:
                    _kill_at(fakes[service], nth, daemon.pid)
                try:
                    assert daemon.wait(timeout=KILL_WAIT_SECONDS) == -signal.SIGKILL, "the daemon died by itself"
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(timeout=10)
                    pytest.fail(f"request {nth} to {service} never came within {KILL_WAIT_SECONDS} s")
                finally:
                    bolna.clear_actions()
                    groq.clear_request_actions()
                expire_claims(db)  # time passes before the restart: the dead process's claims run out
            assert db[CALLS].count_documents({"terminal": True, "processed": False}), "the analyzer finished unkilled"
            runs = _once_until_quiet(env, db)
            print(f"\nkill trial: {len(executions)} calls, {len(KILLS)} SIGKILLs, quiet after {runs} runs of once; "
                  f"{len(groq.recorded())} Groq requests")
            assert db[SYNC_RUNS].count_documents({"status": "running"}) == 0
            check_exact(db, bolna.ground_truth(), "IN", initial={})
        finally:
            mongo.drop_database(database)
