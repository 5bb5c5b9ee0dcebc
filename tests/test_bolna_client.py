"""The Bolna client's HTTP behaviour, with `responses` standing in for the API."""
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests
import responses

from services.bolna_client import BolnaAuthError, BolnaClient, BolnaError, iso
from utils.clock import utcnow

BASE = "https://api.bolna.test"
EXECUTIONS = f"{BASE}/v2/agent/a1/executions"


def client(**options):
    return BolnaClient(BASE, "secret-key", backoff_seconds=0.01, max_attempts=3, **options)


def page(data, has_more=False):
    return {"data": data, "total": len(data), "has_more": has_more, "page_number": 1, "page_size": 50}


@responses.activate
def test_bearer_auth_and_agent_list():
    responses.get(f"{BASE}/v2/agent/all", json=[{"id": "a1"}, {"name": "no id"}])
    assert client().list_agents() == [{"id": "a1"}]
    assert responses.calls[0].request.headers["Authorization"] == "Bearer secret-key"


@responses.activate
def test_server_errors_are_retried():
    responses.get(f"{BASE}/executions/x", status=502)
    responses.get(f"{BASE}/executions/x", json={"id": "x"})
    c = client()
    assert c.get_execution("x") == {"id": "x"}
    assert len(responses.calls) == 2


@responses.activate
def test_retry_after_is_honoured():
    responses.get(f"{BASE}/executions/x", status=429, headers={"Retry-After": "0.3"})
    responses.get(f"{BASE}/executions/x", json={"id": "x"})
    started = time.monotonic()
    client().get_execution("x")
    assert time.monotonic() - started >= 0.3


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_not_retried(status):
    responses.get(f"{BASE}/executions/x", status=status, json={"detail": "Invalid API key"})
    c = client()
    with pytest.raises(BolnaAuthError):
        c.get_execution("x")
    assert len(responses.calls) == 1


@responses.activate
def test_client_errors_are_not_retried_and_gives_up_after_max_attempts():
    responses.get(f"{BASE}/executions/missing", status=404, json={"error": 404, "message": "not found"})
    responses.get(f"{BASE}/executions/down", status=500)
    c = client()
    with pytest.raises(BolnaError, match="404.*not found"):
        c.get_execution("missing")
    with pytest.raises(BolnaError, match="500"):
        c.get_execution("down")
    assert len(responses.calls) == 1 + 3


@responses.activate
def test_connection_errors_are_retried():
    responses.get(f"{BASE}/executions/x", body=requests.ConnectionError("reset"))
    responses.get(f"{BASE}/executions/x", json={"id": "x"})
    assert client().get_execution("x") == {"id": "x"}


@responses.activate
def test_invalid_json_is_a_clear_error():
    responses.get(f"{BASE}/executions/x", body="{truncated", status=200)
    with pytest.raises(BolnaError, match="not valid JSON"):
        client().get_execution("x")


@responses.activate
def test_pages_follow_has_more_and_windows_are_at_most_seven_days():
    responses.get(EXECUTIONS, json=page([{"id": 1}], has_more=True))
    responses.get(EXECUTIONS, json=page([{"id": 2}]))
    responses.get(EXECUTIONS, json=page([{"id": 3}]))
    end = datetime(2026, 11, 20)
    pages = list(client().iter_pages("a1", end - timedelta(days=10), end))
    assert [[e["id"] for e in p] for p in pages] == [[1], [2], [3]]
    assert [p.last for p in pages] == [False, True, True]
    queries = [call.request.params for call in responses.calls]
    assert queries[0]["from"] == "2026-11-10T00:00:00.000Z" and queries[0]["to"] == "2026-11-17T00:00:00.000Z"
    assert [q["page_number"] for q in queries] == ["1", "2", "1"]
    assert queries[2]["from"] == "2026-11-17T00:00:00.000Z" and queries[2]["to"] == "2026-11-20T00:00:00.000Z"
    assert all(q["page_size"] == "50" for q in queries)


@responses.activate
def test_a_page_without_a_data_list_is_an_error():
    responses.get(EXECUTIONS, json={"detail": "odd"})
    with pytest.raises(BolnaError, match="no data list"):
        list(client().iter_pages("a1", datetime(2026, 11, 1), datetime(2026, 11, 2)))


def test_page_size_is_capped_at_the_api_maximum():
    assert client(page_size=500).page_size == 50


WINDOW = (datetime(2026, 11, 20), datetime(2026, 11, 21))


@responses.activate
def test_has_more_as_a_string_is_read_strictly():
    responses.get(EXECUTIONS, json=page([{"id": "1"}], has_more="false"))
    pages = list(client().iter_pages("a1", *WINDOW))
    assert len(pages) == 1 and pages[0].last


@responses.activate
def test_a_has_more_that_says_neither_is_an_error_not_a_guess():
    responses.get(EXECUTIONS, json=page([{"id": "1"}], has_more="maybe"))
    with pytest.raises(BolnaError, match="has_more"):
        list(client().iter_pages("a1", *WINDOW))


@responses.activate
def test_an_api_that_never_stops_saying_has_more_ends_the_window_with_an_error():
    responses.get(EXECUTIONS, json=page([{"id": "same"}], has_more=True))  # page_number ignored
    c = client(max_pages_per_window=5)
    with pytest.raises(BolnaError, match="more than 5 pages"):
        list(c.iter_pages("a1", *WINDOW))
    assert len(responses.calls) == 5


@responses.activate
def test_a_retry_wait_ends_at_once_on_the_stop_signal():
    responses.get(f"{BASE}/executions/x", status=503, headers={"Retry-After": "60"})
    stop = threading.Event()
    c = client(stop=stop, max_wait=60.0)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(BolnaError):
        c.get_execution("x")
    # Without the signal it would wait 60 s twice; the margin is for a loaded machine.
    assert time.monotonic() - started < 30 and len(responses.calls) <= 2


# -- Bolna's clock, from its `Date` header ----------------------------------------------------------

def date_header(moment: datetime) -> dict:
    return {"Date": format_datetime(moment.replace(tzinfo=timezone.utc, microsecond=0), usegmt=True)}


def listed_to(call) -> datetime:
    return datetime.fromisoformat(call.request.params["to"].replace("Z", ""))


@responses.activate
def test_the_listing_ends_at_bolnas_present_by_its_clock():
    bolna_now = utcnow() + timedelta(minutes=20)  # this machine 20 minutes behind
    responses.get(f"{BASE}/executions/x", json={"id": "x"}, headers=date_header(bolna_now))
    responses.get(EXECUTIONS, json=page([]), headers=date_header(bolna_now))
    c = client()
    c.get_execution("x")
    assert abs(c.now() - bolna_now) < timedelta(seconds=5)
    list(c.iter_pages("a1", bolna_now - timedelta(hours=1)))
    assert abs(listed_to(responses.calls[1]) - bolna_now) < timedelta(seconds=5)


@responses.activate
def test_a_window_reads_through_only_as_far_as_its_earliest_page_was_served():
    end = utcnow()
    served = [end - timedelta(minutes=20), end - timedelta(minutes=19), end - timedelta(minutes=18)]
    for number, moment in enumerate(served):
        responses.get(EXECUTIONS, json=page([{"id": number}], has_more=number < 2), headers=date_header(moment))
    pages = list(client().iter_pages("a1", end - timedelta(days=1), end))
    assert [p.read_through for p in pages] == [pages[0].served_at] * 3
    assert served[0] - timedelta(seconds=1) < pages[-1].read_through <= served[0]


@responses.activate
def test_a_first_listing_that_finds_bolnas_clock_ahead_reads_on_up_to_it():
    bolna_now = utcnow() + timedelta(minutes=20)
    responses.get(EXECUTIONS, json=page([]), headers=date_header(bolna_now))
    responses.get(EXECUTIONS, json=page([]), headers=date_header(bolna_now))
    c = client()
    pages = list(c.iter_pages("a1", bolna_now - timedelta(hours=1)))
    first, second = responses.calls
    assert listed_to(first) < bolna_now - timedelta(minutes=19)  # this machine's clock: not known yet
    assert second.request.params["from"] == first.request.params["to"]
    assert listed_to(second) == pages[0].served_at
    assert pages[-1].read_through == listed_to(second)


@responses.activate
def test_a_date_past_belief_is_ignored():
    responses.get(EXECUTIONS, json=page([]), headers=date_header(datetime(1999, 1, 1)))
    c = client()
    end = utcnow()
    [only] = list(c.iter_pages("a1", end - timedelta(hours=1), end))
    assert c.clock_offset is None and only.served_at is None and only.read_through == end
    assert iso(listed_to(responses.calls[0])) == iso(end)
