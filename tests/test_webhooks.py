"""Bolna webhooks over real HTTP: the listener (waitress on 127.0.0.1), the inbox and its
processor, written through the poll's writers. Collected again on the wire server by
tests/test_mongodb_integration_webhooks.py."""
import gc
import http.client
import json
import logging
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import mongomock
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pymongo.errors import ServerSelectionTimeoutError

from fakes.bolna_server import FakeBolna
from fakes.dataset import iso
from services.database import CALLS, CUSTOMER_CALLS, CUSTOMERS, WEBHOOK_INBOX
from services.privacy import forget, hasher_for
from services.webhooks import COUNT_AGE_SECONDS, COUNT_EVERY, DONE, WAITING, Inbox, InboxFull
from tests.helpers import AGENT, build_app, execution, wait_until
from utils.clock import utcnow
from utils.config import BOLNA_SENDER_IPS
from utils.phone import normalize_phone
from worker.health import HealthServer
from worker.status import collect, format_status
from worker.webhook_listener import PATH_PREFIX, THREADS, SenderPolicy, WebhookListener, serve_webhooks

pytestmark = pytest.mark.timeout(120)

TOKEN = "tok_" + "0123456789abcdef" * 2
KEY = "a-test-key-of-32-characters-long"
BOLNA_IP = BOLNA_SENDER_IPS[0]


@pytest.fixture
def hook_settings(settings):
    return settings.with_overrides(webhook_port=0, webhook_host="127.0.0.1", webhook_token=TOKEN,
                                   webhook_allowed_ips=("127.0.0.1",), webhook_max_body_bytes=64 * 1024,
                                   privacy_hash_key=KEY)


@pytest.fixture
def bolna(settings):
    with FakeBolna([AGENT], [], api_key=settings.bolna_api_key) as server:
        yield server


@pytest.fixture
def started():
    """started(app, processor=True) -> the base URL of a running listener (and processor)."""
    stoppers = []

    def start(app, processor: bool = True, **overrides) -> str:
        if processor:
            service = serve_webhooks(app)
            stoppers.append(service.stop)
            host, port = service.address
        else:  # the listener alone: a process that died before its processor ran
            settings = app.settings.with_overrides(**overrides)
            listener = WebhookListener(app.webhook_routes, SenderPolicy(settings.webhook_allowed_ips,
                                                                        settings.webhook_trusted_proxies),
                                       app.deliveries, max_body_bytes=settings.webhook_max_body_bytes,
                                       region="IN", host="127.0.0.1", port=0).start()
            stoppers.append(listener.stop)
            host, port = listener.address
        return f"http://{host}:{port}"

    yield start
    for stop in reversed(stoppers):
        stop()


def url(base: str, token: str = TOKEN) -> str:
    return f"{base}{PATH_PREFIX}{token}"


def deliver(base: str, record, *, token: str = TOKEN, headers: dict | None = None,
            session=requests) -> requests.Response:
    body = record if isinstance(record, bytes) else json.dumps(record).encode()
    return session.post(url(base, token), data=body, timeout=10,
                        headers={"Content-Type": "application/json", **(headers or {})})


def drained(app) -> bool:
    return app.db[WEBHOOK_INBOX].count_documents({"state": WAITING}) == 0


def state_of(call_id: str, status: str, minutes_after: float, customer="+91 98765 43210") -> dict:
    """A call's record as Bolna pushes it `minutes_after` its creation (an hour ago)."""
    created = utcnow() - timedelta(hours=1)
    record = execution(customer, call_id=call_id, status=status, extracted={"user_interested": True,
                                                                            "name": "Ravi"})
    record.update(created_at=iso(created), updated_at=iso(created + timedelta(minutes=minutes_after)))
    return record


def test_a_delivery_reaches_calls_customers_and_the_analysis_queue(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    answer = deliver(base, state_of("w-1", "completed", 3))
    assert (answer.status_code, answer.json()) == (200, {"status": "accepted"})
    # The delivery is finished after its writes: wait for that, not for the first write.
    wait_until(lambda: (app.db[WEBHOOK_INBOX].find_one({"callId": "w-1"}) or {}).get("state") == DONE)
    call = app.db[CALLS].find_one({"callId": "w-1"})
    assert (call["status"], call["terminal"], call["processed"]) == ("completed", True, False)
    customer = app.db[CUSTOMERS].find_one({})
    assert (customer["phone"], customer["status"], customer["callCount"]) == ("+919876543210", "Interested", 1)
    assert app.account.call_queue.depth() == 1
    entry = app.db[WEBHOOK_INBOX].find_one({"callId": "w-1"})
    assert entry["state"] == DONE and "body" not in entry and entry["lagMs"] >= 0


def test_a_wrong_token_answers_404_and_reveals_nothing(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    unknown = requests.post(f"{base}/somewhere/else", data=b"{}", timeout=10)
    for token in ("x" * len(TOKEN), TOKEN[:-1], TOKEN + "0", "", "%00" + TOKEN[3:], "é" * 10):
        answer = deliver(base, state_of("w-2", "completed", 3), token=token)
        assert (answer.status_code, answer.content) == (404, unknown.content)
        assert TOKEN not in answer.text
    assert app.db[WEBHOOK_INBOX].count_documents({}) == 0
    app.deliveries.flush(force=True)
    assert app.deliveries.totals(utcnow() - timedelta(hours=1))["rejected_token"] == 6


def test_only_allowed_senders_and_forwarded_for_only_from_trusted_proxies(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    bolna_only = started(app, processor=False, webhook_allowed_ips=BOLNA_SENDER_IPS)
    assert deliver(bolna_only, state_of("w-3", "completed", 3)).status_code == 403
    # Anyone can write X-Forwarded-For: from a peer that is not a trusted proxy it proves nothing.
    spoofed = deliver(bolna_only, state_of("w-3", "completed", 3), headers={"X-Forwarded-For": BOLNA_IP})
    assert spoofed.status_code == 403
    behind_proxy = started(app, processor=False, webhook_allowed_ips=BOLNA_SENDER_IPS,
                           webhook_trusted_proxies=("127.0.0.0/8",))
    assert deliver(behind_proxy, state_of("w-3", "completed", 3),
                   headers={"X-Forwarded-For": BOLNA_IP}).status_code == 200
    # The proxy appends the real peer: the hop before it was written by the client.
    chained = deliver(behind_proxy, state_of("w-4", "completed", 3),
                      headers={"X-Forwarded-For": f"{BOLNA_IP}, 203.0.113.9"})
    assert chained.status_code == 403
    anyone = started(app, processor=False, webhook_allowed_ips=None)
    assert deliver(anyone, state_of("w-5", "completed", 3)).status_code == 200
    assert sorted(doc["callId"] for doc in app.db[WEBHOOK_INBOX].find()) == ["w-3", "w-5"]


def test_oversized_bodies_answer_413_and_store_nothing(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    record = state_of("w-6", "completed", 3)
    record["transcript"] = "user: " + "a" * hook_settings.webhook_max_body_bytes
    assert deliver(base, record).status_code == 413
    # Chunked, so no Content-Length tells the size ahead.
    body = json.dumps(record).encode()
    chunked = requests.post(url(base), data=(body[i:i + 4096] for i in range(0, len(body), 4096)), timeout=10)
    assert chunked.status_code == 413
    # Far over the limit: refused by waitress before the application reads it.
    huge = requests.post(url(base), data=b"x" * (hook_settings.webhook_max_body_bytes * 5), timeout=10)
    assert huge.status_code == 413
    assert app.db[WEBHOOK_INBOX].count_documents({}) == 0


def test_malformed_bodies_answer_400_and_nothing_answers_5xx(hook_settings, mongo, bolna, started, caplog):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    no_date = state_of("w-7", "completed", 3)
    del no_date["created_at"]
    bodies = [b"", b"not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"null", b'{"status": "completed"}',
              json.dumps({"id": {"$gt": ""}}).encode(), json.dumps(no_date).encode(), b"[" * 60_000,
              b'{"id": "w-8", "created_at": "2026-01-01T00:00:00Z"' + b" " * 10]
    with caplog.at_level(logging.DEBUG):
        for body in bodies:
            answer = deliver(base, body)
            assert answer.status_code == 400, body[:40]
            assert "Traceback" not in answer.text
        assert requests.get(url(base), timeout=10).status_code == 405
        assert requests.put(url(base), data=b"{}", timeout=10).status_code == 405
        odd = deliver(base, state_of("w-9", "completed", 3) | {"status": {"nested": ["status"]},
                                                               "agent_id": [1], "telephony_data": "x"})
        assert odd.status_code == 200
        wait_until(lambda: drained(app))
    assert "Traceback" not in caplog.text
    assert app.db[WEBHOOK_INBOX].count_documents({}) == 1


def test_duplicates_change_nothing(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    record = state_of("w-10", "completed", 3)
    answers = [deliver(base, record).json()["status"] for _ in range(3)]
    assert answers == ["accepted", "duplicate", "duplicate"]
    wait_until(lambda: app.db[CUSTOMERS].count_documents({}) == 1 and drained(app))
    before = (app.db[CALLS].find_one({}, {"_id": 0}), app.db[CUSTOMERS].find_one({}, {"_id": 0}))
    assert deliver(base, record).json()["status"] == "duplicate"
    time.sleep(0.3)  # the processor's poll: it would have written a stored delivery by now
    assert (app.db[CALLS].find_one({}, {"_id": 0}), app.db[CUSTOMERS].find_one({}, {"_id": 0})) == before
    assert before[1]["callCount"] == 1 and app.db[CUSTOMER_CALLS].count_documents({}) == 1


def test_a_late_unfinished_status_never_moves_a_call_back(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    for status, minutes in (("ringing", 0.5), ("completed", 3)):
        assert deliver(base, state_of("w-11", status, minutes)).status_code == 200
        wait_until(lambda: drained(app))
    before = app.db[CALLS].find_one({"callId": "w-11"}, {"_id": 0})
    assert deliver(base, state_of("w-11", "in-progress", 1)).json()["status"] == "accepted"
    wait_until(lambda: drained(app))
    assert app.db[CALLS].find_one({"callId": "w-11"}, {"_id": 0}) == before
    assert before["status"] == "completed"
    # Several states of one call waiting together (a processor that was down) end the same way.
    held = started(app, processor=False)
    for status, minutes in (("completed", 3), ("in-progress", 1), ("initiated", 0.2)):
        assert deliver(held, state_of("w-12", status, minutes)).status_code == 200
    wait_until(lambda: drained(app))
    assert app.db[CALLS].find_one({"callId": "w-12"})["status"] == "completed"
    assert app.db[CUSTOMERS].find_one({})["callCount"] == 2


def test_each_delivery_of_a_call_costs_one_write_command_on_calls(hook_settings, mongo, bolna, started):
    """Bolna posts every status change, so a call's later deliveries find it stored: each is sent
    as the call's update at once, not as an insert the unique `callId` refuses first; the first
    delivery too (the update inserts the call)."""
    sent: list[tuple[str, str]] = []
    app = build_app(hook_settings, mongo, bolna, hook=lambda collection, method: sent.append((collection, method)))
    base = started(app)
    for status, minutes in (("ringing", 0.5), ("in-progress", 1), ("completed", 3)):
        sent.clear()
        assert deliver(base, state_of("w-20", status, minutes)).status_code == 200
        wait_until(lambda: (app.db[WEBHOOK_INBOX].find_one({"callId": "w-20", "status": status})
                            or {}).get("state") == DONE)
        assert sent.count((CALLS, "bulk_write")) == 1, status
    call = app.db[CALLS].find_one({"callId": "w-20"})
    assert (call["status"], call["processed"], app.db[CALLS].count_documents({})) == ("completed", False, 1)


def test_a_delivery_accepted_by_a_process_that_died_is_processed_later(hook_settings, mongo, bolna, started):
    first = build_app(hook_settings, mongo, bolna)
    base = started(first, processor=False)
    assert deliver(base, state_of("w-13", "completed", 3)).status_code == 200
    assert deliver(base, state_of("w-14", "completed", 3, customer="+91 98111 00000")).status_code == 200
    # The first process dies holding a claim on one of them: its lease is still running.
    token, claimed = first.inbox.claim(1)
    assert [delivery.call_id for delivery in claimed] == ["w-13"]
    restarted = build_app(hook_settings, mongo, bolna)
    assert restarted.webhook_processor.process_batch() == 1  # w-14 only: w-13's claim is live
    assert [doc["callId"] for doc in restarted.db[CALLS].find()] == ["w-14"]
    # Time passes beyond the dead process's lease.
    restarted.db[WEBHOOK_INBOX].update_many({"acquired_until": {"$ne": None}},
                                            {"$set": {"acquired_until": utcnow() - timedelta(seconds=1)}})
    assert restarted.webhook_processor.process_batch() == 1
    assert sorted(doc["callId"] for doc in restarted.db[CALLS].find()) == ["w-13", "w-14"]
    assert restarted.db[CUSTOMERS].count_documents({}) == 2
    # The dead process's claim was taken over: its late finish writes nothing.
    assert first.inbox.finish(token, []) == 0
    assert restarted.db[WEBHOOK_INBOX].find_one({"callId": "w-13"})["attempts"] == 2


def test_a_listener_stopped_twice_raises_nothing_and_no_longer_writes_its_trigger(hook_settings, mongo, bolna):
    app = build_app(hook_settings, mongo, bolna)
    listener = serve_webhooks(app)
    assert deliver("http://%s:%d" % listener.address, state_of("w-s", "completed", 3)).status_code == 200
    listener.stop()
    # A daemon's stop runs again in teardown (its exit stack, then a signal): the trigger's pipe is
    # closed by then, and its descriptor numbers may be another file's.
    listener.stop()
    assert not listener._server._thread.is_alive()


def test_two_processors_process_each_delivery_once(hook_settings, mongo, bolna, started):
    one, two = build_app(hook_settings, mongo, bolna), build_app(hook_settings, mongo, bolna)
    base = started(one, processor=False)
    with requests.Session() as session:
        for n in range(120):
            deliver(base, state_of(f"t-{n}", "completed", 3, customer=f"+9198765{n:05d}"), session=session)
    started(one), started(two)
    wait_until(lambda: drained(one))
    entries = list(one.db[WEBHOOK_INBOX].find())
    assert len(entries) == 120 and {(e["state"], e["attempts"]) for e in entries} == {(DONE, 1)}
    assert one.db[CUSTOMER_CALLS].count_documents({}) == 120
    assert sorted(c["callCount"] for c in one.db[CUSTOMERS].find()) == [1] * 120


def test_an_erased_number_is_not_imported_by_webhooks(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings, mongo, bolna)
    forget(app.db, normalize_phone("+91 98765 43210", "IN"), hasher_for(KEY))
    base = started(app)
    assert deliver(base, state_of("w-15", "completed", 3, customer="098765 43210")).status_code == 200
    assert deliver(base, state_of("w-16", "completed", 3, customer="+91 98111 00000")).status_code == 200
    wait_until(lambda: drained(app))
    assert [doc["phone"] for doc in app.db[CUSTOMERS].find()] == ["+919811100000"]
    assert app.db[CALLS].count_documents({"callId": "w-15"}) == 0


def test_a_database_that_cannot_store_answers_503_without_a_traceback(hook_settings, mongo, bolna, started,
                                                                      caplog):
    def down(collection: str, method: str) -> None:
        if collection == WEBHOOK_INBOX and method == "insert_one":
            raise ServerSelectionTimeoutError("no servers reachable (a down database)")

    app = build_app(hook_settings, mongo, bolna, hook=down)
    base = started(app, processor=False)
    with caplog.at_level(logging.DEBUG):
        answer = deliver(base, state_of("w-17", "completed", 3))
    assert answer.status_code == 503 and "Traceback" not in answer.text
    assert "Traceback" not in caplog.text
    assert "webhook_store_failed" in [record.__dict__.get("event") for record in caplog.records]


def test_a_burst_of_1000_deliveries_is_processed_in_bounded_memory(hook_settings, mongo, bolna, started):
    """On a server, 1,000. mongomock scans every stored document on each write (its unique and TTL
    indexes), which tracemalloc slows tenfold: there a burst of 250 keeps the suite's time."""
    burst = 250 if isinstance(mongo, mongomock.MongoClient) else 1000
    app = build_app(hook_settings, mongo, bolna)
    base = started(app)
    transcript = "assistant: Hello\n" + "user: I would like to book a visit next Sunday please\n" * 40
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        with requests.Session() as session:
            for n in range(burst):
                record = state_of(f"b-{n}", "completed", 3, customer=f"+9198765{n:05d}")
                record["transcript"] = transcript
                assert deliver(base, record, session=session).status_code == 200
        wait_until(lambda: drained(app), timeout=90)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert app.db[CUSTOMERS].count_documents({}) == burst and app.account.call_queue.depth() == burst
    # What stays is the database's (mongomock keeps it in this process); what passed through the
    # listener and the processor is bounded by a batch, not by the burst (2.5 MB of bodies).
    transient = peak - current
    assert transient < 12 * 1024 * 1024, f"{transient / 1e6:.1f} MB held at the peak beyond what stays"
    assert current - baseline < 60 * 1024 * 1024


def test_a_call_first_seen_by_webhook_is_not_fetched_again_by_the_poll(hook_settings, mongo, started):
    record = state_of("w-18", "completed", 3)
    with FakeBolna([AGENT], [record], api_key=hook_settings.bolna_api_key, projection="trimmed") as bolna:
        app = build_app(hook_settings, mongo, bolna)
        base = started(app)
        assert deliver(base, record).status_code == 200
        wait_until(lambda: app.db[CUSTOMERS].count_documents({}) == 1 and drained(app))
        crm, calls = app.run_job("crm_sync"), app.run_job("call_processor")
        assert bolna.request_count("/executions/") == 0  # no full record fetched
        for run in (crm, calls):
            assert run["counts"]["unchanged"] == 1 and "inserted" not in run["counts"]
        assert app.db[CUSTOMERS].find_one({})["callCount"] == 1


def test_deliveries_by_outcome_and_the_lag_in_metrics_and_status(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings.with_overrides(health_port=0), mongo, bolna)
    base = started(app)
    health = HealthServer(app, is_scheduling=lambda: True).start()
    try:
        record = state_of("w-19", "completed", 3)
        assert [deliver(base, record).status_code for _ in range(2)] == [200, 200]
        assert deliver(base, record, token="wrong-" + TOKEN).status_code == 404
        assert deliver(base, b"{").status_code == 400
        wait_until(lambda: drained(app) and app.db[CUSTOMERS].count_documents({}) == 1)
        host, port = health.address
        # The processor counts a batch once its entries are closed, a moment after the customer's write.
        wait_until(lambda: 'outcome="processed"} 1.0' in requests.get(f"http://{host}:{port}/metrics", timeout=10).text)
        text = requests.get(f"http://{host}:{port}/metrics", timeout=10).text
    finally:
        health.stop()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    by_outcome = {sample.labels["outcome"]: sample.value for sample in families["callsync_webhook_deliveries"].samples
                  if sample.name.endswith("_total")}
    assert by_outcome == {"accepted": 1, "duplicate": 1, "rejected_token": 1, "rejected_sender": 0,
                          "too_large": 0, "malformed": 1, "throttled": 0, "processed": 1, "failed": 0}
    lag_count = [s.value for s in families["callsync_webhook_lag_seconds"].samples if s.name.endswith("_count")]
    assert lag_count == [1]
    app.deliveries.flush(force=True)
    status = collect(app)["webhooks24h"]
    assert status["deliveries"] == by_outcome and status["waiting"] == 0
    # Bolna stamped the call 57 minutes ago: that is the lag from its updated_at to the write.
    assert status["lagMs"]["count"] == 1 and 56 * 60_000 < status["lagMs"]["p50"] < 58 * 60_000
    assert "webhooks, last 24 h: 1 accepted, 1 duplicate, 1 rejected_token, 1 malformed, 1 processed" in \
        format_status(collect(app))


def test_an_account_at_its_cap_is_answered_429_with_retry_after_and_its_retry_is_accepted(
        hook_settings, mongo, bolna, started):
    app = build_app(hook_settings.with_overrides(webhook_max_waiting=3), mongo, bolna)
    base = started(app, processor=False)
    for n in range(3):
        assert deliver(base, state_of(f"c-{n}", "completed", 3)).status_code == 200
    refused = deliver(base, state_of("c-3", "completed", 3))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Traceback" not in refused.text
    assert app.db[WEBHOOK_INBOX].count_documents({}) == 3  # not stored, so not half-kept either
    assert app.webhook_processor.process_batch() == 3
    # Bolna's retry, once the deliveries waiting were processed.
    assert deliver(base, state_of("c-3", "completed", 3)).json() == {"status": "accepted"}
    app.deliveries.flush(force=True)
    totals = app.deliveries.totals(utcnow() - timedelta(hours=1))
    assert (totals["accepted"], totals["throttled"]) == (4, 1)


def test_a_concurrent_burst_through_one_process_stores_no_more_than_the_cap(hook_settings, mongo, bolna, started):
    cap = 5
    app = build_app(hook_settings.with_overrides(webhook_max_waiting=cap), mongo, bolna)
    base = started(app, processor=False)
    burst = 24  # under the listener's bound of connections per address (all come from 127.0.0.1)
    with ThreadPoolExecutor(burst) as pool:
        codes = list(pool.map(lambda n: deliver(base, state_of(f"u-{n}", "completed", 3)).status_code, range(burst)))
    stored = app.db[WEBHOOK_INBOX].count_documents({})
    # The listener's threads take their places under the cap under one lock, not each from its own
    # count (which let each of them pass at once). A delivery being inserted while a count is taken
    # may be counted twice: a refusal, never one too many.
    assert cap - THREADS < stored <= cap
    assert sorted(set(codes)) == [200, 429] and codes.count(200) == stored


def test_a_burst_counts_its_accounts_waiting_deliveries_once_per_hundred_accepts(hook_settings, mongo, bolna):
    """Counting the waiting entries costs up to the cap of them: not on every delivery."""
    counts = []
    app = build_app(hook_settings, mongo, bolna, hook=lambda collection, method: counts.append(
        method) if (collection, method) == (WEBHOOK_INBOX, "count_documents") else None)
    burst = 3 * COUNT_EVERY
    began = time.monotonic()
    for n in range(burst):
        assert app.webhook_routes.inbox_for(TOKEN).accept(f"b-{n}", "completed", None, b"{}")
    seconds, counted = time.monotonic() - began, len(counts)
    assert app.db[WEBHOOK_INBOX].count_documents({}) == burst
    # One count per COUNT_EVERY accepts, plus one per COUNT_AGE_SECONDS on a machine slow enough to need it.
    assert counted <= burst // COUNT_EVERY + 1 + seconds // COUNT_AGE_SECONDS
    ranks = sorted(doc["rank"] for doc in app.db[WEBHOOK_INBOX].find({}, {"rank": 1}))
    assert ranks == list(range(burst))  # each still ranked by the deliveries waiting before it


def test_replicas_exceed_the_cap_by_at_most_what_the_other_accepted_since_its_count(hook_settings, mongo,
                                                                                     bolna):
    cap = 5
    app = build_app(hook_settings.with_overrides(webhook_max_waiting=cap), mongo, bolna)
    replicas = [Inbox(app.db[WEBHOOK_INBOX], f"replica-{n}", 60.0, max_waiting=cap) for n in range(2)]
    outcomes = []
    for n in range(4 * cap):  # alternately: each counts once, then takes the other's places unseen
        try:
            outcomes.append(replicas[n % 2].accept(f"r-{n}", "completed", None, b"{}"))
        except InboxFull:
            outcomes.append("full")
    stored = app.db[WEBHOOK_INBOX].count_documents({"state": WAITING})
    assert cap <= stored <= cap + min(cap, COUNT_EVERY) and outcomes.count(True) == stored
    assert outcomes[-2:] == ["full", "full"]  # a refusal is on a fresh count: both see the account full
