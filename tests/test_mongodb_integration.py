"""The job tests and the fault suite again, against a real server (MONGODB_URI, or the wire server
the test run starts: tests.real_mongo), so mongomock's answers are checked against a server; plus the one fault only a real
process can show: the daemon killed with SIGKILL mid-run, then restarted.

Each test starts from an empty database, dropped afterwards."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.real_mongo import mongo  # noqa: F401 - `mongo`: the fixture, on the server
from fakes.bolna_server import FakeBolna
from fakes.dataset import generate
from services.database import CALLS, SYNC_RUNS
from tests.faults import assert_matches_ground_truth
from tests.test_customer_rules import *  # noqa: F401,F403 - collected again, on the server
from tests.test_faults_bolna import *  # noqa: F401,F403
from tests.test_faults_hostile import *  # noqa: F401,F403
from tests.test_faults_llm import *  # noqa: F401,F403
from tests.test_faults_sync import *  # noqa: F401,F403
from tests.test_sync_jobs import *  # noqa: F401,F403
from tests.test_faults_mongo import expire_claims, snapshot
from tests.test_faults_mongo import test_two_daemons_at_once_store_and_analyze_everything_once  # noqa: F401

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent


def _daemon_env(bolna: FakeBolna, uri: str, database: str) -> dict:
    return {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": database, "BOLNA_BASE_URL": bolna.base_url,
            "BOLNA_API_KEY": bolna.api_key, "BACKFILL_DAYS": "6", "BOLNA_PAGE_SIZE": "10",
            "LLM_CALLS_PER_RUN": "500", "GROQ_API_KEY": "", "LOG_LEVEL": "WARNING"}


def _once(bolna: FakeBolna, uri: str, database: str) -> None:
    subprocess.run([sys.executable, "main.py", "once"], cwd=ROOT, env=_daemon_env(bolna, uri, database),
                   check=True, timeout=120, capture_output=True)


def test_daemon_killed_mid_run_then_restarted_ends_as_a_clean_run(mongo, mongodb_uri):
    agents, executions = generate(agents=2, per_agent=150, seed=31, span_days=5)
    killed_db, clean_db = (f"callsync_kill_{uuid.uuid4().hex[:8]}", f"callsync_clean_{uuid.uuid4().hex[:8]}")
    # Slow, trimmed answers (one extra request per call): the run lasts long enough to be killed in.
    with FakeBolna(agents, executions, api_key="k", projection="trimmed", latency=0.01) as bolna:
        try:
            _once(bolna, mongodb_uri, clean_db)

            daemon = subprocess.Popen([sys.executable, "main.py", "run"], cwd=ROOT,
                                      env=_daemon_env(bolna, mongodb_uri, killed_db),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while mongo[killed_db][CALLS].count_documents({}) < 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
            assert mongo[killed_db][CALLS].count_documents({}) < len(executions), "killed too late"

            _once(bolna, mongodb_uri, killed_db)  # the restart: marks the dead run, resumes from the cursors
            expire_claims(mongo[killed_db])  # a lease the dead process held has run out by now
            _once(bolna, mongodb_uri, killed_db)
            assert mongo[killed_db][SYNC_RUNS].count_documents({"status": "running"}) == 0
            assert snapshot(mongo[killed_db]) == snapshot(mongo[clean_db])
            assert_matches_ground_truth(mongo[killed_db], bolna)
        finally:
            mongo.drop_database(killed_db)
            mongo.drop_database(clean_db)
