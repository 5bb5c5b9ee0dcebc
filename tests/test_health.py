"""The health listener over real HTTP on 127.0.0.1: /healthz states and /metrics content."""
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes.bolna_server import FakeBolna
from fakes.groq_server import FakeGroq
from utils.clock import utcnow
from services.database import CALLS, SYNC_RUNS
from tests.helpers import AGENT, build_app, execution
from worker.health import HealthServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bolna(settings):
    calls = [execution(f"+9198765432{n:02d}", minutes_ago=10 + n, call_id=f"c-{n}",
                       transcript="assistant: Hello\nuser: Yes I want to book a site visit this Sunday\n")
             for n in range(5)]
    with FakeBolna([AGENT], calls, api_key=settings.bolna_api_key) as server:
        yield server


@pytest.fixture
def health_settings(settings):
    return settings.with_overrides(health_port=0, health_host="127.0.0.1", sync_interval_minutes=5,
                                   health_max_age_intervals=3)


@pytest.fixture
def listen():
    servers = []

    def start(app, scheduling: threading.Event, started_at=None):
        server = HealthServer(app, is_scheduling=scheduling.is_set, started_at=started_at).start()
        servers.append(server)
        host, port = server.address
        return f"http://{host}:{port}"

    yield start
    for server in servers:
        server.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def healthz(base: str) -> tuple[int, dict]:
    status, content_type, body = get(base + "/healthz")
    assert content_type == "application/json"
    return status, json.loads(body)


def scheduling() -> threading.Event:
    flag = threading.Event()
    flag.set()
    return flag


def old_success(db, job: str, hours: float) -> None:
    finished = utcnow() - timedelta(hours=hours)
    db[SYNC_RUNS].insert_one({"_id": f"old-{job}", "job": job, "status": "ok", "counts": {},
                              "startedAt": finished - timedelta(minutes=1), "finishedAt": finished})


def test_healthy_while_scheduling_and_runs_are_recent(health_settings, mongo, bolna, listen):
    app = build_app(health_settings, mongo, bolna)
    base = listen(app, scheduling())

    status, body = healthz(base)
    assert status == 200 and body["status"] == "ok" and body["reasons"] == []
    assert body["jobs"]["crm_sync"]["lastSuccessAt"] is None  # a fresh start gets time for its first runs
    assert body["maxAgeSeconds"] == 15 * 60

    for job in ("crm_sync", "call_processor"):
        app.run_job(job)
    status, body = healthz(base)
    assert status == 200
    assert all(state["lastSuccessAt"] and state["ageSeconds"] < 60 for state in body["jobs"].values())


def test_unhealthy_when_the_scheduler_stopped(health_settings, mongo, bolna, listen):
    app = build_app(health_settings, mongo, bolna)
    flag = scheduling()
    base = listen(app, flag)
    for job in ("crm_sync", "call_processor"):
        app.run_job(job)
    assert healthz(base)[0] == 200

    flag.clear()
    status, body = healthz(base)
    assert status == 503 and body["status"] == "unhealthy"
    assert body["reasons"] == ["the scheduler is not running"]


def test_unhealthy_when_a_job_has_not_succeeded_for_too_long(health_settings, mongo, db, bolna, listen):
    old_success(db, "crm_sync", hours=2)
    old_success(db, "call_processor", hours=2)
    app = build_app(health_settings, mongo, bolna)
    # A daemon up for 3 hours: its last successes are since the start.
    base = listen(app, scheduling(), started_at=utcnow() - timedelta(hours=3))

    status, body = healthz(base)
    assert status == 503
    assert [reason.split(":")[0] for reason in body["reasons"]] == ["crm_sync", "call_processor"]
    assert body["jobs"]["crm_sync"]["ageSeconds"] >= 7200

    app.run_job("call_processor")
    status, body = healthz(base)
    assert status == 503 and [reason.split(":")[0] for reason in body["reasons"]] == ["crm_sync"]

    # A failed run is no success: crm_sync stays unhealthy.
    bolna.inject("/v2/agent/", status=403)  # the key is refused
    assert app.run_job("crm_sync")["status"] == "failed"
    assert healthz(base)[0] == 503

    app.run_job("crm_sync")
    assert healthz(base)[0] == 200


def test_a_job_that_never_succeeds_since_start_becomes_unhealthy(health_settings, mongo, bolna, listen):
    # 0.001 intervals of 1 minute: 60 ms without a successful run is too long.
    app = build_app(health_settings.with_overrides(sync_interval_minutes=1, health_max_age_intervals=0.001),
                    mongo, bolna)
    base = listen(app, scheduling())
    time.sleep(0.2)

    status, body = healthz(base)
    assert status == 503
    assert all("none since the start" in reason for reason in body["reasons"]) and len(body["reasons"]) == 2


def test_a_restart_after_downtime_is_healthy_while_its_first_runs_catch_up(health_settings, mongo, db,
                                                                           bolna, listen):
    # The daemon was down for 2 hours: its last successes are older than the 15 minutes allowed.
    old_success(db, "crm_sync", hours=2)
    old_success(db, "call_processor", hours=2)
    base = listen(build_app(health_settings, mongo, bolna), scheduling())

    status, body = healthz(base)
    assert status == 200 and body["reasons"] == []
    assert body["jobs"]["crm_sync"]["lastSuccessAt"] is not None  # still reported as it is
    assert all(state["ageSeconds"] < 60 for state in body["jobs"].values())  # measured from the start


def test_a_restarted_job_that_does_not_catch_up_becomes_unhealthy(health_settings, mongo, db, bolna, listen):
    old_success(db, "crm_sync", hours=2)
    app = build_app(health_settings.with_overrides(sync_interval_minutes=1, health_max_age_intervals=0.001),
                    mongo, bolna)
    base = listen(app, scheduling())
    time.sleep(0.2)

    status, body = healthz(base)
    assert status == 503 and len(body["reasons"]) == 2
    assert all("none since the start" in reason for reason in body["reasons"])
    assert body["jobs"]["crm_sync"]["ageSeconds"] < 60  # from the start, not from 2 hours ago


def metric_samples(base: str) -> dict[tuple[str, tuple], float]:
    status, content_type, text = get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_follow_the_run_records(health_settings, mongo, db, bolna, listen):
    with FakeGroq() as groq:
        llm_settings = health_settings.with_overrides(groq_api_keys=("gsk-test",), groq_base_url=groq.base_url,
                                                      llm_calls_per_run=3)
        app = build_app(llm_settings, mongo, bolna)
        base = listen(app, scheduling())
        crm = app.run_job("crm_sync")
        calls = app.run_job("call_processor")
        bolna.inject("/v2/agent/", status=403)  # next run: the key is refused
        failed = app.run_job("crm_sync")

    samples = metric_samples(base)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("callsync_runs_total", job="crm_sync", status="ok") == 1
    assert value("callsync_runs_total", job="crm_sync", status="failed") == 1
    assert value("callsync_runs_total", job="call_processor", status="ok") == 1
    assert value("callsync_runs_total", job="call_processor", status="partial") == 0
    assert value("callsync_records_written_total", job="crm_sync", operation="inserted") == crm["counts"]["inserted"] == 5
    assert value("callsync_records_written_total", job="call_processor", operation="inserted") == 5
    assert value("callsync_run_errors_total", job="crm_sync") == failed["errorCount"] == 1
    assert value("callsync_llm_calls_total", outcome="ok") == calls["counts"]["analyzed"] == 3
    assert value("callsync_llm_tokens_total", kind="prompt") == calls["counts"]["promptTokens"] > 0
    assert value("callsync_llm_tokens_total", kind="completion") == calls["counts"]["completionTokens"] > 0
    assert calls["counts"]["costUsd"] > 0
    assert value("callsync_llm_cost_usd_total") == pytest.approx(calls["counts"]["costUsd"])
    assert value("callsync_llm_fallbacks_total") == 0 and value("callsync_llm_fallback_ratio") == 0
    assert value("callsync_last_success_timestamp_seconds", job="crm_sync") == pytest.approx(
        crm["finishedAt"].replace(tzinfo=timezone.utc).timestamp())
    assert value("callsync_analysis_queue_depth") == db[CALLS].count_documents(
        {"processed": False, "terminal": True}) == 2


def test_fallback_ratio_is_the_share_of_heuristic_analyses(health_settings, mongo, bolna, listen):
    app = build_app(health_settings.with_overrides(llm_calls_per_run=4), mongo, bolna)  # no Groq key
    base = listen(app, scheduling())
    app.run_job("call_processor")

    samples = metric_samples(base)
    assert samples[("callsync_llm_fallbacks_total", ())] == 4
    assert samples[("callsync_llm_fallback_ratio", ())] == 1.0


def test_unknown_path_is_404(health_settings, mongo, bolna, listen):
    base = listen(build_app(health_settings, mongo, bolna), scheduling())
    assert get(base + "/")[0] == 404


def probe(base: str, path: str) -> tuple[int, dict]:
    status, content_type, body = get(base + path)
    assert content_type == "application/json"
    return status, json.loads(body)


def test_livez_and_readyz_say_why(health_settings, mongo, bolna, listen):
    app = build_app(health_settings, mongo, bolna)
    flag = scheduling()
    base = listen(app, flag)
    assert probe(base, "/livez") == (200, {"status": "ok", "reasons": []})
    assert probe(base, "/readyz") == (200, {"status": "ready", "reasons": []})

    bolna.inject("/v2/agent/", status=403)  # the key is refused: the last crm_sync failed
    assert app.run_job("crm_sync")["status"] == "failed"
    assert probe(base, "/readyz") == (503, {"status": "not ready", "reasons": ["crm_sync: its last run failed"]})
    assert probe(base, "/livez")[0] == 200  # alive all the same: a restart would not help
    app.run_job("crm_sync")
    assert probe(base, "/readyz")[0] == 200

    flag.clear()
    assert probe(base, "/livez") == (503, {"status": "not live", "reasons": ["the scheduler is not running"]})
    assert probe(base, "/readyz")[0] == 503


def test_a_thousand_idle_connections_hold_no_thread_and_healthz_still_answers(health_settings, mongo, bolna, listen):
    base = listen(build_app(health_settings, mongo, bolna), scheduling())
    host, port = base.removeprefix("http://").split(":")
    assert healthz(base)[0] == 200
    threads_before = threading.active_count()
    idle = []
    try:
        for n in range(1000):
            client = socket.create_connection((host, int(port)), timeout=5)
            if n % 2:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a head never finished (slowloris)
            idle.append(client)
        started = time.monotonic()
        status, _body = healthz(base)
        took = time.monotonic() - started
        threads_during = threading.active_count()
    finally:
        for client in idle:
            client.close()
    assert status == 200 and took < 1.0, took
    assert threads_during <= threads_before + 2, (threads_before, threads_during)  # the check pool, at most


def test_an_idle_client_is_dropped_after_the_read_timeout(health_settings, mongo, bolna):
    app = build_app(health_settings, mongo, bolna)
    server = HealthServer(app, is_scheduling=lambda: True, read_timeout=0.3).start()
    try:
        with socket.create_connection(server.address, timeout=5) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\n")
            started = time.monotonic()
            assert client.recv(100) == b""  # closed unanswered
            assert time.monotonic() - started < 3
    finally:
        server.stop()


def test_a_head_past_the_bound_is_refused_at_once(health_settings, mongo, bolna, listen):
    base = listen(build_app(health_settings, mongo, bolna), scheduling())
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n")
        assert client.recv(100).split(b" ")[1] == b"431"  # Request Header Fields Too Large
    assert get(base + "/healthz")[0] == 200
    with socket.create_connection((host, int(port)), timeout=5) as client:
        client.sendall(b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert client.recv(100).split(b" ")[1] == b"405"


def test_metrics_parse_and_count_requests_by_outcome_durations_cursors_build_and_process(
        health_settings, mongo, bolna, listen):
    with FakeGroq(retry_after=0.01) as groq:
        app = build_app(health_settings.with_overrides(groq_api_keys=("gsk-test",), groq_base_url=groq.base_url,
                                                       llm_calls_per_run=2, llm_concurrency=1), mongo, bolna)
        base = listen(app, scheduling())
        bolna.inject("/executions$", status=500)  # retried, then answered
        bolna.inject("/executions$", status=429, retry_after=0.01)
        groq.respond("server_error", times=1)
        groq.respond("rate_limited", times=1)
        app.run_job("crm_sync")
        app.run_job("call_processor")
        status, content_type, text = get(base + "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}

    def value(family: str, sample: str, **labels) -> float:
        return next(s.value for s in families[family].samples if s.name == sample and s.labels == labels)

    assert value("callsync_bolna_requests", "callsync_bolna_requests_total", outcome="retried") == 1
    assert value("callsync_bolna_requests", "callsync_bolna_requests_total", outcome="429") == 1
    assert value("callsync_bolna_requests", "callsync_bolna_requests_total", outcome="error") == 0
    assert value("callsync_bolna_requests", "callsync_bolna_requests_total", outcome="ok") == len(bolna.requests) - 2
    assert value("callsync_llm_requests", "callsync_llm_requests_total", outcome="retried") == 1
    assert value("callsync_llm_requests", "callsync_llm_requests_total", outcome="429") == 1
    assert value("callsync_llm_requests", "callsync_llm_requests_total", outcome="ok") == 2
    assert families["callsync_run_duration_seconds"].type == "histogram"
    assert value("callsync_run_duration_seconds", "callsync_run_duration_seconds_count", job="crm_sync") == 1
    cursor = value("callsync_cursor_timestamp_seconds", "callsync_cursor_timestamp_seconds", job="call_processor")
    assert 0 < time.time() - cursor < 3600  # behind Bolna by at most the overlap and the young unfinished calls
    build = next(iter(families["callsync_build_info"].samples))
    assert build.name == "callsync_build_info" and set(build.labels) == {"version", "python"}
    assert value("process_resident_memory_bytes", "process_resident_memory_bytes") > 0
    assert "python_gc_objects_collected" in families
    # Prometheus' conventions: a counter's samples end in _total, times in seconds, no account label.
    for family in families.values():
        assert family.name.startswith(("callsync_", "process_", "python_")), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        assert not family.name.endswith(("_ms", "_milliseconds", "_minutes")), family.name
        assert all("account" not in s.labels for s in family.samples)


def test_a_spent_llm_budget_is_counted(health_settings, mongo, bolna, listen):
    with FakeGroq() as groq:
        app = build_app(health_settings.with_overrides(groq_api_keys=("gsk-test",), groq_base_url=groq.base_url,
                                                       llm_calls_per_run=3, llm_request_budget=1, llm_concurrency=1),
                        mongo, bolna)
        base = listen(app, scheduling())
        run = app.run_job("call_processor")
    assert run["counts"]["analyzed"] == 1 and run["counts"]["llmBudgetSpent"] == 1
    samples = metric_samples(base)
    assert samples[("callsync_llm_budget_exhausted_total", ())] == 1
    assert samples[("callsync_llm_configured", ())] == 1
