"""`main.py webhook-url`: the URL to configure, and `--apply` through Bolna's API (a real
subprocess against the fake Bolna over HTTP); with many accounts, each account's own URL, read
from `users` on the real server."""
import hashlib
import hmac
import uuid

import pytest

from fakes.bolna_server import FakeBolna
from tests.helpers import AGENT
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_service import run_main

pytestmark = pytest.mark.timeout(90)

TOKEN = "tok_" + "fedcba9876543210" * 2
HOOKS = {"WEBHOOK_PUBLIC_URL": "https://hooks.example.com/", "WEBHOOK_TOKEN": TOKEN}
URL = f"https://hooks.example.com/webhooks/bolna/{TOKEN}"


def test_prints_the_url_without_touching_bolna_or_the_database():
    result = run_main("webhook-url", "--agent", "agent-1", **HOOKS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == URL and "--apply" in result.stdout


@pytest.mark.parametrize("missing, says", [("WEBHOOK_PUBLIC_URL", "WEBHOOK_PUBLIC_URL is not set"),
                                           ("WEBHOOK_TOKEN", "WEBHOOK_TOKEN is not set")])
def test_says_what_is_missing(missing, says):
    result = run_main("webhook-url", **{**HOOKS, missing: ""})
    assert result.returncode == 2 and result.stderr.startswith(f"callsync: {says}")
    assert "Traceback" not in result.stderr


def test_a_short_token_is_refused_without_showing_it():
    result = run_main("webhook-url", **{**HOOKS, "WEBHOOK_TOKEN": "short-secret"})
    assert result.returncode == 2 and "WEBHOOK_TOKEN is invalid" in result.stderr
    assert "short-secret" not in result.stderr


def test_apply_sets_the_url_on_the_agent_and_logs_it_masked():
    with FakeBolna([AGENT, {"id": "agent-2", "agent_name": "Other"}], [], api_key="cli-key") as bolna:
        result = run_main("webhook-url", "--agent", "agent-1", "--apply", BOLNA_API_KEY="cli-key",
                          BOLNA_BASE_URL=bolna.base_url, LOG_FORMAT="json", **HOOKS)
        assert result.returncode == 0, result.stderr
        assert bolna.agent("agent-1")["agent_config"] == {"webhook_url": URL}
        assert "agent_config" not in bolna.agent("agent-2")
        assert [(r.method, r.path, r.status) for r in bolna.requests] == [("PATCH", "/v2/agent/agent-1", 200)]
    log_lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(log_lines) == 1 and '"webhook_url_set"' in log_lines[0] and TOKEN not in log_lines[0]
    assert result.stdout.splitlines()[-1] == f"agent agent-1: webhook URL set to {URL}"


def test_apply_to_an_unknown_agent_or_with_a_refused_key_fails_in_one_line():
    with FakeBolna([AGENT], [], api_key="cli-key") as bolna:
        unknown = run_main("webhook-url", "--agent", "nobody", "--apply", BOLNA_API_KEY="cli-key",
                           BOLNA_BASE_URL=bolna.base_url, HTTP_MAX_ATTEMPTS="1", **HOOKS)
        refused = run_main("webhook-url", "--agent", "agent-1", "--apply", BOLNA_API_KEY="wrong-key",
                           BOLNA_BASE_URL=bolna.base_url, **HOOKS)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
    assert refused.returncode == 1 and "refused the API key" in refused.stderr
    for result in (unknown, refused):
        assert "Traceback" not in result.stderr + result.stdout and "wrong-key" not in result.stderr
    no_agent = run_main("webhook-url", "--apply", BOLNA_API_KEY="cli-key", **HOOKS)
    assert no_agent.returncode == 2 and "--apply needs --agent" in no_agent.stderr


@pytest.fixture
def accounts(mongo, mongodb_uri):  # noqa: F811 - `mongo`: the real server's client (tests.real_mongo)
    """Accounts in `users` on the real server; the variables of a many-accounts daemon reading them."""
    database = f"callsync_hooks_{uuid.uuid4().hex[:8]}"
    mongo[database]["users"].insert_many([
        {"_id": "alpha", "bolnaApiKey": "key-alpha", "subscription": {"status": "active"}},
        {"_id": "lapsed", "bolnaApiKey": "key-lapsed", "subscription": {"status": "cancelled"}},
    ])
    yield {**HOOKS, "MONGODB_URI": mongodb_uri, "MONGODB_DB": database, "ACCOUNT_SOURCE": "mongodb"}
    mongo.drop_database(database)


def test_with_many_accounts_each_account_has_its_own_url(accounts):
    alpha = run_main("webhook-url", "--account", "alpha", **accounts)
    assert alpha.returncode == 0, alpha.stderr
    token = hmac.new(TOKEN.encode(), b"alpha", hashlib.sha256).hexdigest()  # as docs/scaling.md documents it
    assert alpha.stdout.splitlines()[0] == f"https://hooks.example.com/webhooks/bolna/{token}"

    unnamed = run_main("webhook-url", **accounts)
    lapsed = run_main("webhook-url", "--account", "lapsed", **accounts)
    unknown = run_main("webhook-url", "--account", "nobody", **accounts)
    assert unnamed.returncode == 2 and "name the account with --account" in unnamed.stderr
    assert lapsed.returncode == 2 and "ACCOUNTS_FILTER does not list it" in lapsed.stderr
    assert unknown.returncode == 2 and "no account 'nobody'" in unknown.stderr
    single = run_main("webhook-url", "--account", "alpha", **HOOKS)
    assert single.returncode == 2 and "needs ACCOUNT_SOURCE=mongodb" in single.stderr


def test_with_many_accounts_apply_uses_the_accounts_own_key(accounts):
    with FakeBolna([AGENT], [], api_key="key-alpha") as bolna:
        result = run_main("webhook-url", "--account", "alpha", "--agent", "agent-1", "--apply",
                          BOLNA_BASE_URL=bolna.base_url, LOG_FORMAT="json", **accounts)
        assert result.returncode == 0, result.stderr
        url = result.stdout.splitlines()[-1].rsplit(" ", 1)[-1]
        assert bolna.agent("agent-1")["agent_config"] == {"webhook_url": url}
    token = url.rsplit("/", 1)[-1]
    assert all(token not in line and "key-alpha" not in line for line in result.stdout.splitlines()[:-1])
