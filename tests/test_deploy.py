"""deploy/: the alert rules and the dashboard name only metrics the daemon exports, and the
fallback alert stands only where a Groq key is configured."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import mongomock
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fakes.bolna_server import FakeBolna
from fakes.groq_server import FakeGroq
from tests.helpers import AGENT, build_app, execution
from utils.config import Settings
from worker.app import JOB_NAMES
from worker.health import RunMetrics, observe_accounts

pytestmark = pytest.mark.timeout(60)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "callsync-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "callsync-dashboard.json"
OURS = ("callsync_", "process_", "python_")
PROMETHEUS_OWN = {"up"}  # set by Prometheus for every target


def sample_names(registry) -> set[str]:
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every series name a single-account daemon with a Groq key and a fleet replica export, once
    their jobs have run (some series only exist after a first run)."""
    settings = Settings(mongodb_db="callsync_test", bolna_api_key="test-key", http_backoff_seconds=0.01)
    calls = [execution(f"+9198765432{n:02d}", minutes_ago=10 + n, call_id=f"c-{n}") for n in range(3)]
    with FakeBolna([AGENT], calls, api_key=settings.bolna_api_key) as bolna, FakeGroq() as groq:
        app = build_app(settings.with_overrides(groq_api_keys=("gsk-test",), groq_base_url=groq.base_url),
                        mongomock.MongoClient(), bolna)
        for job in JOB_NAMES:
            app.run_job(job)
        names = sample_names(app.metrics.registry)
    fleet = RunMetrics(JOB_NAMES, queue_depth=None)
    observe_accounts(fleet, lambda: {"waiting": 1})
    fleet.refresh()
    return names | sample_names(fleet.registry)


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    return {name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings)
            if name.startswith(OURS) or name in PROMETHEUS_OWN}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_metric_an_alert_names_is_exported(exported):
    named = {rule["alert"]: metric_names(rule["expr"]) for rule in rules()}
    assert all(named.values()), named
    missing = {alert: names - exported - PROMETHEUS_OWN for alert, names in named.items() if names - exported - PROMETHEUS_OWN}
    assert missing == {}


def test_every_metric_a_panel_names_is_exported(exported):
    exprs = panel_exprs()
    assert len(exprs) >= 20
    missing = {name for expr in exprs for name in metric_names(expr)} - exported
    assert missing == set()


def test_every_alert_says_what_it_means():
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_fallback_alert_stands_only_where_a_groq_key_is_configured(settings, mongo):
    (fallback,) = [rule for rule in rules() if "callsync_llm_fallback_ratio" in rule["expr"]]
    assert re.search(r"\band on\(instance\) callsync_llm_configured == 1\b", fallback["expr"])
    with FakeBolna([AGENT], [], api_key=settings.bolna_api_key) as bolna:
        without_key = build_app(settings, mongo, bolna)
        with_key = build_app(settings.with_overrides(groq_api_keys=("gsk-test",)), mongo, bolna)
    configured = {app: next(sample.value for family in text_string_to_metric_families(
        generate_latest(app.metrics.registry).decode()) for sample in family.samples
        if sample.name == "callsync_llm_configured") for app in (without_key, with_key)}
    assert configured == {without_key: 0, with_key: 1}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) is not installed")
def test_promtool_checks_the_rules_and_their_unit_tests():
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.with_name("callsync-alerts.test.yml"))]):
        result = subprocess.run(["promtool", *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
