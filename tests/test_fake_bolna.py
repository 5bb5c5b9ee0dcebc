from datetime import datetime, timedelta, timezone

import pytest
import requests

from fakes.bolna_server import FakeBolna
from fakes.dataset import generate, iso
from fakes.demo_dataset import demo_dataset

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
AUTH = {"Authorization": "Bearer test-key"}


def window(days: float = 7) -> dict:
    return {"from": iso(NOW - timedelta(days=days)), "to": iso(NOW)}


@pytest.fixture
def data():
    return generate(agents=2, per_agent=120, now=NOW, span_days=6.5)


@pytest.fixture
def fake(data):
    with FakeBolna(*data) as server:
        yield server


def get(fake, path, **params):
    return requests.get(fake.base_url + path, params=params, headers=AUTH, timeout=5)


def test_wrong_or_missing_key_is_403(fake):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = requests.get(fake.base_url + "/v2/agent/all", headers=headers, timeout=5)
        assert answer.status_code == 403
        assert answer.json() == {"detail": "Invalid API key"}
    assert [r.status for r in fake.requests] == [403, 403]


def test_pages_newest_first_until_has_more_is_false(fake, data):
    agents, executions = data
    agent_id = agents[0]["id"]
    assert [a["id"] for a in get(fake, "/v2/agent/all").json()] == [a["id"] for a in agents]

    pages = [get(fake, f"/v2/agent/{agent_id}/executions", page_number=n, page_size=50, **window()).json()
             for n in (1, 2, 3)]
    assert [(p["total"], p["has_more"], len(p["data"])) for p in pages] == [
        (120, True, 50), (120, True, 50), (120, False, 20)]
    served = [e for p in pages for e in p["data"]]
    expected = sorted((e for e in executions if e["agent_id"] == agent_id),
                      key=lambda e: e["created_at"], reverse=True)
    assert served == expected
    assert fake.request_count(f"/v2/agent/{agent_id}") == 3


def test_window_is_inclusive_and_filters(fake, data):
    agents, executions = data
    mine = [e for e in executions if e["agent_id"] == agents[1]["id"]]
    newest = max(e["created_at"] for e in mine)
    page = get(fake, f"/v2/agent/{agents[1]['id']}/executions", page_size=50,
               **{"from": newest, "to": newest.replace("Z", "+00:00")}).json()
    assert [e["created_at"] for e in page["data"]] == [newest]

    page = get(fake, f"/v2/agent/{agents[1]['id']}/executions", status="busy", **window()).json()
    assert page["total"] == sum(e["status"] == "busy" for e in mine)
    assert all(e["status"] == "busy" for e in page["data"])


@pytest.mark.parametrize("params", [
    {},  # from/to are required
    {"from": iso(NOW - timedelta(days=7, seconds=1)), "to": iso(NOW)},
    {"from": iso(NOW), "to": iso(NOW - timedelta(days=1))},
    {**window(), "page_size": 51},
])
def test_bad_listing_parameters_are_400(fake, data, params):
    answer = get(fake, f"/v2/agent/{data[0][0]['id']}/executions", **params)
    assert answer.status_code == 400
    assert answer.json()["error"] == 400


def test_unknown_agent_and_execution_are_404(fake):
    assert get(fake, "/v2/agent/nope/executions", **window()).status_code == 404
    assert get(fake, "/executions/nope").json()["error"] == 404


def test_trimmed_list_and_full_record_by_id(data):
    agents, executions = data
    with FakeBolna(agents, executions, projection="trimmed") as fake:
        listed = get(fake, f"/v2/agent/{agents[0]['id']}/executions", **window()).json()["data"][0]
        assert "transcript" not in listed and "extracted_data" not in listed
        assert set(listed["telephony_data"]) == {"call_type", "duration"}
        full = get(fake, f"/executions/{listed['id']}").json()
        assert full == next(e for e in executions if e["id"] == listed["id"])


def test_added_and_updated_executions_are_served(fake, data):
    agents, executions = data
    call = {**executions[0], "id": "new-call", "status": "in-progress", "transcript": None,
            "created_at": iso(NOW - timedelta(minutes=1))}
    fake.add_execution(call)
    fake.update_execution("new-call", status="completed", transcript="user: hi\n")
    latest = get(fake, f"/v2/agent/{call['agent_id']}/executions", **window()).json()["data"][0]
    assert (latest["id"], latest["status"], latest["transcript"]) == ("new-call", "completed", "user: hi\n")
    assert latest["updated_at"] > call["updated_at"]


def test_injected_faults_then_recovery(fake):
    fake.inject(r"^/v2/agent/all$", status=429, times=2, retry_after=1.5)
    for _ in range(2):
        answer = get(fake, "/v2/agent/all")
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "1.5")
        assert answer.json() == {"error": 429, "message": "Injected fault"}
    assert get(fake, "/v2/agent/all").status_code == 200

    fake.inject("/executions/", drop_connection=True)
    with pytest.raises(requests.ConnectionError):
        get(fake, "/executions/anything")
    fake.inject("/agent/all", truncate=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(fake, "/v2/agent/all")
    fake.inject("/agent/all", body=b'[{"id": ')
    with pytest.raises(requests.JSONDecodeError):
        get(fake, "/v2/agent/all").json()


def test_generate_is_deterministic_and_handles_large_sets():
    assert generate(seed=5, now=NOW) == generate(seed=5, now=NOW)
    agents, executions = generate(agents=2, per_agent=50000, now=NOW)
    assert len(agents) == 2 and len(executions) == 100000
    assert all(NOW - timedelta(days=6) <= datetime.fromisoformat(e["created_at"]) <= NOW
               for e in executions[::997])


def test_demo_dataset_has_the_awkward_cases():
    agents, executions = demo_dataset(NOW)
    assert len(agents) == 3 and len(executions) >= 50
    numbers = {e["telephony_data"]["to_number"] for e in executions} | {
        e["telephony_data"]["from_number"] for e in executions}
    assert {"+91 98765 43210", "9876543210", "09876543210", "12345"} <= numbers
    statuses = {e["status"] for e in executions}
    assert {"in-progress", "no-answer", "completed"} <= statuses
    assert any("extracted_data" not in e for e in executions)
    assert any(isinstance(e.get("extracted_data"), str) for e in executions)
    assert all(NOW - timedelta(days=3) <= datetime.fromisoformat(e["created_at"]) <= NOW for e in executions)
