"""Shared by the fault suite: Apps wired to the fakes (optionally through a MongoDB hook), and the
one check every fault scenario ends with: MongoDB against the fake server's ground truth."""
from __future__ import annotations

from collections import Counter

from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import no_hook
from models.execution import MalformedExecution, parse_execution, parse_time
from services.analyzer.write_back import ACTIVITY_TYPE
from services.database import CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS
from tests.helpers import build_app
from worker.app import JOB_NAMES, Runtime


def app_for(settings, mongo, bolna: FakeBolna, hook=no_hook) -> Runtime:
    """A prepared Runtime on `mongo` and `bolna`, every MongoDB operation passing `hook` first.
    A second Runtime on the same client is a second daemon, or the same daemon restarted."""
    return build_app(settings, mongo, bolna, hook)


def run_both(app: Runtime, **options) -> dict[str, dict]:
    return {name: app.run_job(name, **options) for name in JOB_NAMES}


def expected_customers(truth: dict[str, dict], region: str) -> dict[str, set[str]]:
    """Customer key -> ids of the terminal calls from that number, as a complete sync stores them."""
    customers: dict[str, set[str]] = {}
    for record in truth.values():
        try:
            execution = parse_execution(record, region)
        except MalformedExecution:
            continue
        phone = execution.customer_phone
        if execution.terminal and phone is not None:
            customers.setdefault(phone.key, set()).add(execution.id)
    return customers


def assert_matches_ground_truth(db, bolna: FakeBolna, region: str = "IN", *, skip: set[str] = frozenset()):
    """Nothing lost, nothing duplicated: one `calls` document per execution the API holds, in its
    latest version, and one customer per number holding exactly that number's terminal calls.
    `skip`: ids of executions the sync rightly refuses (malformed)."""
    truth = {call_id: record for call_id, record in bolna.ground_truth().items() if call_id not in skip}
    assert_calls_match(db, truth)
    assert_customers_match(db, truth, region)


def assert_calls_match(db, truth: dict[str, dict]):
    calls = list(db[CALLS].find({}, {"callId": 1, "status": 1, "bolnaUpdatedAt": 1}))
    assert not _duplicates(c["callId"] for c in calls), "a call was stored twice"
    assert {c["callId"] for c in calls} == set(truth), "calls lost or invented"
    for call in calls:
        record = truth[call["callId"]]
        assert (call["status"], call["bolnaUpdatedAt"]) == (record["status"], parse_time(record["updated_at"])), \
            f"call {call['callId']} is not in its latest version"


def customer_call_ids(db) -> dict[str, set[str]]:
    """Customer phone -> ids of the calls counted on it (its links, each applied)."""
    linked: dict[str, set[str]] = {}
    for link in db[CUSTOMER_CALLS].find():
        assert link["applied"], f"call {link['_id']} was linked but its customer never updated"
        linked.setdefault(link["phone"], set()).add(link["_id"])
    return linked


def assert_customers_match(db, truth: dict[str, dict], region: str):
    customers = list(db[CUSTOMERS].find({}, {"phone": 1, "callIds": 1, "callCount": 1}))
    assert not _duplicates(c["phone"] for c in customers), "a number has two customers"
    assert not any("callIds" in c for c in customers), "an array that grows with every call"
    linked = customer_call_ids(db)
    assert set(linked) == {c["phone"] for c in customers}, "calls counted on no customer"
    assert linked == expected_customers(truth, region)
    assert all(c["callCount"] == len(linked[c["phone"]]) for c in customers)


def assert_each_call_analyzed_once(db):
    """Every terminal call processed, and one activity per analysis (none twice)."""
    assert db[CALLS].count_documents({"terminal": True, "processed": False}) == 0
    activities = Counter(a["callId"] for a in db["activities"].find({"type": ACTIVITY_TYPE}, {"callId": 1}))
    assert activities and max(activities.values()) == 1
    assert not _duplicates(c["phone"] for c in db[CONTACTS].find({}, {"phone": 1}))


def _duplicates(values) -> list:
    return [value for value, count in Counter(values).items() if count > 1]
