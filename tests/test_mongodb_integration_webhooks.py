"""Order-safe call writes and webhooks again on a real server (tests.real_mongo): the pipeline
update, the inbox's unique key and leases must hold on the server's semantics, not mongomock's.
Plus what only real processes show: the daemon killed with SIGKILL while deliveries arrive, then
restarted, has lost none it answered 200."""
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

from fakes.bolna_server import FakeBolna
from services.database import CALLS, WEBHOOK_INBOX
from tests.helpers import AGENT
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_call_order import *  # noqa: F401,F403 - collected again, on the server
from tests.test_webhooks import *  # noqa: F401,F403
from tests.test_webhooks import TOKEN, state_of, url, wait_until
from utils.clock import utcnow

ROOT = Path(__file__).resolve().parent.parent


def _start_daemon(bolna: FakeBolna, uri: str, database: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": database, "BOLNA_BASE_URL": bolna.base_url,
           "BOLNA_API_KEY": bolna.api_key, "GROQ_API_KEY": "", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
           "WEBHOOK_PORT": "0", "WEBHOOK_TOKEN": TOKEN, "WEBHOOK_ALLOWED_IPS": "127.0.0.1"}
    daemon = subprocess.Popen([sys.executable, "main.py", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in daemon.stdout:
        seen.append(line)
        if '"webhook_listening"' in line:
            threading.Thread(target=daemon.stdout.read, daemon=True).start()  # keep the pipe drained
            return daemon, json.loads(line)["message"].split(" on ")[1].split("/webhooks")[0]
    raise AssertionError(f"the daemon never listened for webhooks (exit {daemon.wait()}): {seen[-3:]}")


@pytest.mark.timeout(180)
def test_daemon_killed_while_deliveries_arrive_loses_none_it_accepted(mongo, mongodb_uri):
    database = f"callsync_hooks_{uuid.uuid4().hex[:8]}"
    accepted: list[str] = []
    daemon = None
    with FakeBolna([AGENT], [], api_key="k") as bolna:
        try:
            daemon, base = _start_daemon(bolna, mongodb_uri, database)
            with requests.Session() as session:
                for n in range(400):
                    if n == 150:
                        daemon.send_signal(signal.SIGKILL)  # mid-burst: some accepted, not yet processed
                    record = state_of(f"k-{n}", "completed", 3, customer=f"+9198765{n:05d}")
                    try:
                        answer = session.post(url(base), data=json.dumps(record), timeout=5)
                    except requests.ConnectionError:
                        break
                    if answer.status_code == 200:
                        accepted.append(record["id"])
            daemon.wait(timeout=10)
            assert 150 <= len(accepted) < 400
            # Time passes beyond the dead process's leases; then it is started again.
            mongo[database][WEBHOOK_INBOX].update_many(
                {"acquired_until": {"$ne": None}}, {"$set": {"acquired_until": utcnow() - timedelta(seconds=1)}})
            restarted, _base = _start_daemon(bolna, mongodb_uri, database)
            try:
                wait_until(lambda: mongo[database][WEBHOOK_INBOX].count_documents({"state": "waiting"}) == 0, 60)
            finally:
                restarted.send_signal(signal.SIGTERM)
                assert restarted.wait(timeout=40) == 0
            stored = {doc["callId"] for doc in mongo[database][CALLS].find({}, {"callId": 1})}
            assert set(accepted) <= stored
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.kill()
            mongo.drop_database(database)
