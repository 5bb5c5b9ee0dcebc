"""The probes and /metrics while MongoDB goes away, on a real server (tests.wire_server) that this
test stops: /readyz fails within one probe, /metrics still answers at once."""
import json
import time
import urllib.error
import urllib.request

import pytest

from fakes.bolna_server import FakeBolna
from tests.helpers import AGENT, execution
from tests.wire_server import WireServer
from worker.app import Runtime
from worker.health import PING_TIMEOUT_SECONDS, HealthServer

pytestmark = pytest.mark.timeout(90)


def get(url: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - started


def test_readyz_fails_within_one_probe_and_metrics_answer_at_once_while_mongodb_is_away(settings):
    calls = [execution(f"+9198765432{n:02d}", minutes_ago=10 + n, call_id=f"c-{n}") for n in range(3)]
    with WireServer() as server, FakeBolna([AGENT], calls, api_key=settings.bolna_api_key) as bolna:
        # No serverSelectionTimeoutMS in the URI: the driver would wait 5 s (worker/app.py) for a server.
        app = Runtime.build(settings.with_overrides(mongodb_uri=server.uri, bolna_base_url=bolna.base_url,
                                                    health_port=0, llm_calls_per_run=1))
        app.prepare()
        app.run_job("crm_sync")
        app.run_job("call_processor")  # one of three analyzed: two wait, as the refreshed gauge says
        health = HealthServer(app, is_scheduling=lambda: True).start()
        try:
            host, port = health.address
            base = f"http://{host}:{port}"
            assert get(base + "/readyz")[0] == 200

            server.stop()
            status, body, took = get(base + "/readyz")
            assert status == 503 and took < PING_TIMEOUT_SECONDS + 2, took
            reasons = json.loads(body)["reasons"]
            assert len(reasons) == 1 and reasons[0].startswith("MongoDB did not answer a ping")
            assert get(base + "/livez")[0] == 200  # the process is fine: no restart for an outage

            scrapes = [get(base + "/metrics") for _ in range(3)]
            assert all(status == 200 for status, _, _ in scrapes)
            assert min(took for _, _, took in scrapes) < 0.1, [took for _, _, took in scrapes]
            assert b"callsync_analysis_queue_depth 2.0" in scrapes[-1][1]  # the last value read
        finally:
            health.stop()
            app.close()
