"""Retention and erasure (tests/test_privacy.py, tests/test_erasure_everywhere.py) again on a real
server (tests.real_mongo): the sweeps, the suppression checks and the retention batches through a
server's own updates, deletes and index plans; plus `main.py forget` as a user runs it, in its own
process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_DB
from tests.helpers import AGENT, build_app
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_privacy import *  # noqa: F401,F403 - collected again, on the server
from tests.test_erasure_everywhere import *  # noqa: F401,F403 - collected again, on the server
from tests.test_privacy import DIGITS, KEY, assert_person_gone, person_and_others, sync

ROOT = Path(__file__).resolve().parent.parent


def _forget(uri: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": TEST_DB, "PRIVACY_HASH_KEY": key, "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "main.py", "forget", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.timeout(120)
def test_the_forget_command_erases_and_never_prints_the_number(mongo, mongodb_uri, settings, bolna_server):
    app = build_app(settings, mongo, bolna_server(person_and_others(), [AGENT]))
    sync(app)
    db = mongo[TEST_DB]
    calls_before = db["calls"].count_documents({})

    dry = _forget(mongodb_uri, "--phone", "+91 98765-43210", "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout and "***3210" in dry.stdout
    assert db["customers"].count_documents({}) == 3 and db["suppressions"].count_documents({}) == 0

    done = _forget(mongodb_uri, "--phone", "0091 98765 43210")
    assert done.returncode == 0, done.stderr
    assert "erased" in done.stdout and DIGITS not in (dry.stdout + done.stdout + done.stderr).replace(" ", "")
    assert_person_gone(db)
    assert db["calls"].count_documents({}) == calls_before

    again = _forget(mongodb_uri, "--phone", "9876543210")
    assert again.returncode == 0 and "Nothing was left to remove" in again.stdout

    other_key = _forget(mongodb_uri, "--phone", "9876543210", key="another-key-of-enough-length")
    assert other_key.returncode == 2 and "not the key" in other_key.stderr


@pytest.mark.timeout(120)
def test_the_forget_command_refuses_an_agents_own_line(mongo, mongodb_uri, settings, bolna_server):
    app = build_app(settings, mongo, bolna_server(person_and_others(), [AGENT]))
    sync(app)
    db = mongo[TEST_DB]
    before = {name: list(db[name].find()) for name in ("calls", "customers", "suppressions", "erasures")}

    for args in (("--phone", "+91 80456 71234", "--dry-run"), ("--phone", "08045671234")):
        refused = _forget(mongodb_uri, *args)
        assert refused.returncode == 1
        assert "agent's own line" in refused.stderr and "nothing was erased" in refused.stderr
        assert "8045671234" not in (refused.stdout + refused.stderr).replace(" ", "")
    assert {name: list(db[name].find()) for name in before} == before
