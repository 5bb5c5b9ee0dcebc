from datetime import datetime, timedelta, timezone

import pytest
import requests

from fakes.accounts_dataset import accounts_dataset, customer_number
from fakes.bolna_api import RateLimits
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


# -- many accounts --------------------------------------------------------------------------------

@pytest.fixture
def accounts():
    return accounts_dataset(2, agents_per_account=2, calls_per_agent=30, seed=3, now=NOW, span_days=6.5)


def as_(account, fake, path, **params):
    headers = {"Authorization": f"Bearer {account.api_key}"}
    return requests.get(fake.base_url + path, params=params, headers=headers, timeout=5)


def test_accounts_are_isolated(accounts):
    a, b = accounts
    shared_ids = {e["id"] for e in a.executions} & {e["id"] for e in b.executions}
    a_only = next(e for e in a.executions if e["id"] not in shared_ids)
    with FakeBolna.serving(accounts) as fake:
        for mine, theirs in ((a, b), (b, a)):
            assert as_(mine, fake, "/v2/agent/all").json() == mine.agents
            listed = as_(mine, fake, f"/v2/agent/{mine.agents[0]['id']}/executions", page_size=50,
                         **window()).json()
            assert listed["total"] == 30
            assert {e["agent_id"] for e in listed["data"]} == {mine.agents[0]["id"]}
            # Another organisation's agent is as missing as one that never existed.
            missing = as_(mine, fake, f"/v2/agent/{theirs.agents[0]['id']}/executions", **window())
            assert missing.status_code == 404 and missing.json()["error"] == 404
        assert as_(a, fake, f"/executions/{a_only['id']}").json() == a_only
        assert as_(b, fake, f"/executions/{a_only['id']}").status_code == 404
        # One id, two accounts: each key gets its own call.
        for shared_id in shared_ids:
            served = [as_(acc, fake, f"/executions/{shared_id}").json() for acc in (a, b)]
            assert served == [next(e for e in acc.executions if e["id"] == shared_id) for acc in (a, b)]
            assert served[0]["agent_id"] != served[1]["agent_id"]
        unknown = requests.get(fake.base_url + "/v2/agent/all", headers={"Authorization": "Bearer bn-nope"},
                               timeout=5)
        assert (unknown.status_code, unknown.json()) == (403, {"detail": "Invalid API key"})
    assert shared_ids


def test_changes_to_one_account_stay_in_it(accounts):
    a, b = accounts
    with FakeBolna.serving(accounts) as fake:
        call = {**b.executions[0], "id": a.executions[0]["id"], "status": "in-progress",
                "created_at": iso(NOW - timedelta(minutes=1))}
        fake.account(b.api_key).add_execution(call)
        fake.account(b.api_key).update_execution(call["id"], status="completed")
        assert as_(b, fake, f"/executions/{call['id']}").json()["status"] == "completed"
        assert as_(a, fake, f"/executions/{call['id']}").json() == a.executions[0]
        assert fake.ground_truth() == {e["id"]: e for e in a.executions}
        assert fake.account(b.api_key).ground_truth()[call["id"]]["agent_id"] == b.agents[0]["id"]

        answer = requests.patch(fake.base_url + f"/v2/agent/{a.agents[0]['id']}", timeout=5,
                                json={"agent_config": {"webhook_url": "https://hooks.example/b"}},
                                headers={"Authorization": f"Bearer {b.api_key}"})
        assert answer.status_code == 404
        assert "agent_config" not in fake.agent(a.agents[0]["id"])


def test_rate_limits_are_per_account(accounts):
    a, b = accounts
    with FakeBolna.serving(accounts, rate_limits=RateLimits(listing=2)) as fake:
        path = f"/v2/agent/{a.agents[0]['id']}/executions"
        assert [as_(a, fake, path, **window()).status_code for _ in range(3)] == [200, 200, 429]
        assert as_(a, fake, path, **window()).headers["Retry-After"]
        assert as_(b, fake, f"/v2/agent/{b.agents[0]['id']}/executions", **window()).status_code == 200
        assert as_(a, fake, f"/executions/{a.executions[0]['id']}").status_code == 200  # another class


def test_request_log_faults_and_actions_per_account(accounts):
    a, b = accounts
    with FakeBolna.serving(accounts) as fake:
        fake.inject("/agent/all", status=503, api_key=b.api_key)
        fake.on_answer("/agent/all", lambda: fake.account(a.api_key).add_execution(
            {**a.executions[0], "id": "late-call"}), api_key=a.api_key)
        assert as_(a, fake, "/v2/agent/all").status_code == 200
        assert as_(b, fake, "/v2/agent/all").status_code == 503
        assert as_(b, fake, "/v2/agent/all").status_code == 200
        assert "late-call" in fake.ground_truth()
        assert "late-call" not in fake.account(b.api_key).ground_truth()
        requests.get(fake.base_url + "/v2/agent/all", timeout=5)

        assert [(r.account, r.status) for r in fake.requests] == [
            ("acct-0000", 200), ("acct-0001", 503), ("acct-0001", 200), (None, 403)]
        assert fake.request_count(api_key=b.api_key) == 2
        assert fake.request_count("/v2/agent/all", api_key=a.api_key) == 1
        assert fake.request_count() == 4
        assert not any(a.api_key in str(r) or b.api_key in str(r) for r in fake.requests)


def test_default_account_can_be_rekeyed_and_keys_stay_unique(fake, accounts):
    fake.api_key = "new-key"
    assert get(fake, "/v2/agent/all").status_code == 403
    answer = requests.get(fake.base_url + "/v2/agent/all", headers={"Authorization": "Bearer new-key"},
                          timeout=5)
    assert answer.status_code == 200
    fake.add_account(accounts[0].api_key, accounts[0].agents, [], label="acct-0000")
    with pytest.raises(ValueError):
        fake.add_account(accounts[0].api_key, [], [])
    with pytest.raises(ValueError):
        fake.add_account("other", [], [], label="acct-0000")
    with pytest.raises(ValueError):
        fake.api_key = accounts[0].api_key


def test_accounts_dataset_is_deterministic_and_shares_on_purpose():
    assert accounts_dataset(4, 2, 10, seed=7, now=NOW) == accounts_dataset(4, 2, 10, seed=7, now=NOW)
    assert accounts_dataset(4, 2, 10, seed=7, now=NOW) != accounts_dataset(4, 2, 10, seed=8, now=NOW)
    accounts = accounts_dataset(500, agents_per_account=2, calls_per_agent=4, seed=1, now=NOW)
    assert len(accounts) == 500
    assert len({a.api_key for a in accounts}) == len({a.label for a in accounts}) == 500
    assert len({agent["id"] for a in accounts for agent in a.agents}) == 1000
    for account in accounts:
        assert len(account.agents) == 2 and len(account.executions) == 8
        assert len({e["id"] for e in account.executions}) == 8  # unique within an account
        assert {e["agent_id"] for e in account.executions} == {agent["id"] for agent in account.agents}

    def ids(account):
        return {e["id"] for e in account.executions}

    def customers(account):
        return {customer_number(e) for e in account.executions}

    a, b, c = accounts_dataset(3, 2, 50, seed=2, now=NOW)
    assert len(ids(a) & ids(b)) == 5 and len(customers(a) & customers(b)) >= 5
    assert not ids(b) & ids(c) and not customers(b) & customers(c)  # c has no partner
    a, b = accounts_dataset(2, 2, 50, seed=2, now=NOW, shared=False)
    assert not ids(a) & ids(b) and not customers(a) & customers(b)
    agent_numbers = [{e["telephony_data"]["from_number"] for e in x.executions
                      if e["telephony_data"]["call_type"] == "outbound"} for x in (a, b)]
    assert len(agent_numbers[0]) == 2 and not agent_numbers[0] & agent_numbers[1]
