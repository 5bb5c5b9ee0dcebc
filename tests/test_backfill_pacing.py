"""A backfill over trimmed listings: each full record read once for both jobs, every request paced
under Bolna's documented limits (the fake answers 429 beyond them), and a stop that ends a wait
for a turn at once. Real HTTP against the local fake; the limits run over a shortened minute."""
import threading
import time
from datetime import datetime, timezone

import pytest

from fakes.bolna_api import RateLimits
from fakes.dataset import generate
from fakes.mongo_hooks import HookedClient
from services.bolna_client import BolnaClient, BolnaError, Limits, Pacer, endpoint_class
from services.database import CALLS, CUSTOMERS
from worker.app import JOB_NAMES, Runtime

pytestmark = pytest.mark.timeout(120)

CALLS_PER_AGENT = 60


@pytest.fixture
def history():
    return generate(agents=2, per_agent=CALLS_PER_AGENT, seed=11, span_days=5, repeat_ratio=0.0,
                    now=datetime.now(timezone.utc))


def _app(settings, mongo, bolna, limits: Limits = Limits()) -> Runtime:
    settings = settings.with_overrides(bolna_base_url=bolna.base_url)
    client = BolnaClient(settings.bolna_base_url, settings.bolna_api_key, backoff_seconds=0.01, max_attempts=8,
                         max_wait=5, limits=limits, connections=16)
    app = Runtime(settings, HookedClient(mongo)[settings.mongodb_db], bolna=client)
    app.prepare()
    return app


def _side_by_side(app: Runtime) -> list[dict]:
    """Both jobs at once, as the daemon's scheduler starts them."""
    records: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda name=name: records.update({name: app.run_job(name)}))
               for name in JOB_NAMES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [records[name] for name in JOB_NAMES]


def _listings(bolna) -> int:
    return sum(1 for r in bolna.requests if r.path.endswith("/executions"))


def _complete(db, executions) -> bool:
    """Every call stored, with the transcript only its full record has."""
    calls = {c["callId"]: c for c in db[CALLS].find()}
    return len(calls) == len(executions) and all(
        calls[e["id"]].get("transcript") == e["transcript"] for e in executions if e.get("transcript"))


# Bolna's limits over a minute of six seconds: the tests below are about counts, not pacing.
FAST = dict(minute_seconds=6)


def test_one_after_the_other_the_jobs_fetch_each_full_record_once(settings, mongo, bolna_server, history, db):
    agents, executions = history
    bolna = bolna_server(executions, agents, projection="trimmed", rate_limits=RateLimits(**FAST))
    app = _app(settings, mongo, bolna, Limits(**FAST))
    for name in JOB_NAMES:
        assert app.run_job(name)["status"] == "ok"
    terminal = sum(1 for e in executions if e["status"] in ("completed", "no-answer", "busy", "failed"))
    assert bolna.request_count("/executions/") <= len(executions)
    assert bolna.request_count("/executions/") == terminal  # the others have nothing final to fetch
    assert _complete(db, executions) and db[CUSTOMERS].count_documents({}) > 0
    assert bolna.request_count() == bolna.request_count("/executions/") + _listings(bolna) + 2  # + discovery


def test_side_by_side_the_jobs_share_each_full_record(settings, mongo, bolna_server, history, db):
    agents, executions = history
    bolna = bolna_server(executions, agents, projection="trimmed", latency=0.005, rate_limits=RateLimits(**FAST))
    app = _app(settings, mongo, bolna, Limits(**FAST))
    assert [record["status"] for record in _side_by_side(app)] == ["ok", "ok"]
    assert bolna.request_count("/executions/") <= len(executions)
    assert len({r.path for r in bolna.requests if r.path.startswith("/executions/")}) == \
        bolna.request_count("/executions/")  # no id twice
    assert _complete(db, executions)


def test_a_paced_backfill_meets_no_429(settings, mongo, bolna_server, history, db):
    agents, executions = history
    # A minute of one second: 40 listings and 80 other requests a second at most.
    bolna = bolna_server(executions, agents, projection="trimmed", latency=0.01,
                         rate_limits=RateLimits(minute_seconds=1, listing=40, other=80))
    app = _app(settings, mongo, bolna, Limits(40, 80, headroom=0.2, minute_seconds=1))
    assert [record["status"] for record in _side_by_side(app)] == ["ok", "ok"]
    assert [r for r in bolna.requests if r.status == 429] == []
    assert app.account.bolna.pacer.waited_seconds > 0  # the limits were reached
    assert _complete(db, executions)


def test_without_pacing_the_same_backfill_meets_429s_and_still_completes(settings, mongo, bolna_server, history, db):
    agents, executions = history
    bolna = bolna_server(executions, agents, projection="trimmed", latency=0.01,
                         rate_limits=RateLimits(minute_seconds=1, listing=40, other=80))
    app = _app(settings, mongo, bolna, Limits(10**6, 10**6, headroom=0.0, minute_seconds=1))
    assert [record["status"] for record in _side_by_side(app)] == ["ok", "ok"]
    assert [r for r in bolna.requests if r.status == 429]  # the fake enforces the limits the pacer keeps to
    assert _complete(db, executions)


def test_a_stop_ends_a_wait_for_a_turn_at_once(bolna_server, history):
    agents, executions = history
    bolna = bolna_server(executions[:1], agents[:1])
    stop = threading.Event()
    client = BolnaClient(bolna.base_url, "test-key", stop=stop, limits=Limits(1, 1, headroom=0.0))
    client.list_agents()  # the minute's one request
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(BolnaError, match="not sent: stopped"):
        client.list_agents()  # its turn would come in a minute
    assert time.monotonic() - started < 30
    assert bolna.request_count() == 1


@pytest.mark.parametrize("path, kind", [
    ("/v2/agent/a-1/executions", "listing"), ("/v2/agent/a-1", "listing"), ("/call", "listing"),
    ("/v2/agent/all", "other"), ("/executions/e-1", "other"), ("/executions/e-1/log", "other"),
    ("/batches/b-1/executions", "other")])
def test_each_endpoint_is_paced_under_its_documented_limit(path, kind):
    assert endpoint_class(path) == kind


def test_the_pacer_lets_through_no_more_than_the_limit_less_headroom_in_any_window():
    # A "minute" long beside a loaded machine's scheduling delays, which can bunch the recorded
    # times of turns granted apart.
    minute = 1.0
    pacer = Pacer(Limits(50, 100, headroom=0.2, minute_seconds=minute))  # 80 "a minute"
    stop = threading.Event()
    turns = []
    for _ in range(200):
        pacer.wait_turn("/executions/x", stop)
        turns.append(time.monotonic())
    busiest = max(sum(1 for t in turns[i:] if t - turns[i] < minute) for i in range(len(turns)))
    assert 70 <= busiest <= 80


def test_a_stop_ends_the_pacers_wait():
    pacer = Pacer(Limits(1, 1, headroom=0.0))
    stop = threading.Event()
    pacer.wait_turn("/executions/x", stop)
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(BolnaError, match="not sent: stopped"):
        pacer.wait_turn("/executions/x", stop)  # the next turn is a minute away
