"""`main.py webhook-url`: the URL to configure, and `--apply` through Bolna's API (a real
subprocess against the fake Bolna over HTTP)."""
import pytest

from fakes.bolna_server import FakeBolna
from tests.helpers import AGENT
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
