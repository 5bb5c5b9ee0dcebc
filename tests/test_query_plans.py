"""Query plans on a real server (the wire server the test run starts, or MONGODB_URI): every query
the jobs send, and the ones a CRM consumer writes, must be answered from an index. mongomock has
no planner, so only a server can show a collection scan.

The jobs' queries are not copied here: they are recorded off the wire (pymongo command
monitoring) while both jobs, the analyzer, a re-analysis and the start-up checks run, and each
filter is then explained as a `find` with the same sort and hint (explain of an update or
findAndModify plans the same query; the wire server plans only `find`'s shape reliably)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pymongo import MongoClient, monitoring

from fakes.dataset import generate
from fakes.groq_server import FakeGroq
from tests.test_pipelines import SALES
from services.database import (ACTIVITIES, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, PIPELINES, SUPPRESSIONS,
                               SYNC_STATE, WEBHOOK_INBOX)
from services.privacy import Eraser, PhoneHasher, forget
from services.run_records import RunRecorder
from tests.conftest import TEST_DB
from tests.helpers import build_app, requeue
from tests.real_mongo import mongo  # noqa: F401 - the test database on the server, dropped after
from utils.clock import utcnow
from utils.phone import normalize_phone

pytestmark = pytest.mark.timeout(180)

HASH_KEY = "query-plans-test-privacy-key"
_QUERY_COMMANDS = frozenset({"find", "findAndModify", "update", "delete", "distinct", "aggregate", "count"})

# Filters whose residual predicate (a field outside the index) the wire server's planner cannot
# combine with an index, so it reports a collection scan where MongoDB's planner uses the index
# named here. Each is per analyzed call or per start-up, never per listed call; they are not
# asserted, and every other query is.
PLANNER_GAPS = {
    # The analyzer finishing or releasing its claim: MongoDB uses callId_unique.
    ("update", CALLS, '{"acquired_token": "str", "callId": "str", "userId": "NoneType"}'),
    # Start-up: runs this host left `running` (`$or`; and what they are, by `distinct`, which takes
    # no hint): MongoDB uses status_host.
    ("update", "sync_runs", '{"$or": [{"host": "str", "pid": {"$in": []}}, '
                            '{"startedAt": {"$lt": "datetime"}}], "status": "str", "userId": "NoneType"}'),
    ("distinct", "sync_runs", '{"host": "str", "status": "str", "userId": "NoneType"}'),
}


def by_id(filter: dict) -> bool:
    """Whether the filter selects by `_id` (one, or a few by `$in`): MongoDB answers it from
    `_id_` whatever else it says. The wire server runs it by `_id` too, though its explain reports
    a collection scan when the filter has another field (`userId`, a claim token): measured 1-8 ms
    at 50,000 documents, against 380 ms for a real scan. (Naming `_id_` in a hint would make its
    explain agree, and make it walk the whole index: 0.2-0.8 s. So no query names it.)"""
    selector = filter.get("_id")
    return selector is not None and (not isinstance(selector, dict) or set(selector) == {"$in"})


# Read whole on purpose: a few documents the CRM front end keeps, read once a minute.
WHOLE_COLLECTION_READS = {("find", PIPELINES)}


def _shape(value):
    """The filter's structure with its values reduced to their type: one entry per query shape."""
    if isinstance(value, dict):
        return {key: _shape(value[key]) for key in sorted(value)}
    if isinstance(value, list):  # clauses ($or) each; a list of values as its first one
        return [_shape(item) for item in (value if any(isinstance(i, dict) for i in value) else value[:1])]
    return type(value).__name__


def _queries(event) -> list[dict]:
    """(filter, sort, hint) of each query in one command."""
    command, name = event.command, event.command_name
    if name == "find":
        return [{"filter": command.get("filter", {}), "sort": command.get("sort"), "hint": command.get("hint")}]
    if name == "findAndModify":
        return [{"filter": command.get("query", {}), "sort": command.get("sort"), "hint": command.get("hint")}]
    if name == "update":
        return [{"filter": u["q"], "sort": None, "hint": u.get("hint")} for u in command["updates"]]
    if name == "delete":
        return [{"filter": d["q"], "sort": None, "hint": d.get("hint")} for d in command["deletes"]]
    if name in ("distinct", "count"):
        return [{"filter": command.get("query", {}), "sort": None, "hint": None}]
    head = (command.get("pipeline") or [{}])[0]  # aggregate: count_documents is a leading $match
    return [{"filter": head.get("$match", {}), "sort": None, "hint": command.get("hint")}]


class QueryRecorder(monitoring.CommandListener):
    def __init__(self):
        self.queries: dict[tuple, dict] = {}  # (command, collection, shape) -> one example

    def started(self, event):
        if event.command_name not in _QUERY_COMMANDS:
            return
        collection = event.command[event.command_name]
        for query in _queries(event):
            shape = json.dumps(_shape(query["filter"]), sort_keys=True)
            self.queries.setdefault((event.command_name, collection, shape), query)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def plan_stages(db, collection: str, filter: dict, sort=None, hint=None) -> list[str]:
    """The winning plan's stages, outermost first, each index scan with its index's name."""
    command = {"find": collection, "filter": filter}
    if sort:
        command["sort"] = sort
    if hint:
        command["hint"] = hint
    plan = db.command("explain", command, verbosity="queryPlanner")["queryPlanner"]["winningPlan"]
    stages = []
    while plan:
        stages.append(plan["stage"] + (f"({plan['indexName']})" if "indexName" in plan else ""))
        plan = plan.get("inputStage") or (plan.get("inputStages") or [None])[0] or plan.get("queryPlan")
    return stages


@pytest.fixture
def recorded(mongo, mongodb_uri, settings, bolna_server):
    """Both jobs run twice over 120 calls (with retention: transcripts after 2 days, calls after
    4), an erasure (its dry run first) between them, a re-analysis, and the start-up and health
    reads, on a client whose every command is recorded. Yields (recorder, database)."""
    recorder = QueryRecorder()
    client = MongoClient(mongodb_uri, tz_aware=False, event_listeners=[recorder])
    agents, executions = generate(agents=2, per_agent=60, seed=7, span_days=5)
    bolna = bolna_server(executions, agents)
    groq = FakeGroq().start()
    # Every call through a Groq Batch API job, applied by the second run; the synchronous lane too.
    app = build_app(settings.with_overrides(llm_calls_per_run=200, groq_api_keys=("key-1",), groq_base_url=groq.base_url,
                                            llm_batch_mode="always", privacy_hash_key=HASH_KEY,
                                            transcript_retention_days=2, record_retention_days=4), client, bolna)
    client[TEST_DB][PIPELINES].insert_one({**SALES, "updateMode": "UPDATE_EXISTING"})  # every decision routed
    for round in range(2):
        for job in ("crm_sync", "call_processor"):
            assert app.run_job(job)["status"] in ("ok", "partial")
        for job_id, job in list(groq.batch_api.jobs.items()):
            if job["status"] == "in_progress":
                groq.batch_api.complete(job_id)
        if round == 0:
            erased = mongo[TEST_DB][CUSTOMERS].find_one({"phoneValid": True}, {"phone": 1})  # not recorded
            Eraser(app.db).find(normalize_phone(erased["phone"], "IN"))
            assert any(forget(app.db, normalize_phone(erased["phone"], "IN"), PhoneHasher(HASH_KEY)).values())
    analyzed = mongo[TEST_DB][CALLS].find_one({"analysis.status": "ok"}, {"callId": 1})  # not recorded
    assert analyzed is not None
    assert requeue(app.db, call_id=analyzed["callId"]) == 1
    # The re-analysis, by the synchronous lane (the Batch API lane took every call above): its claim,
    # and the call's conversation replaced on its contact.
    app.account.analysis.run(RunRecorder("call_processor"))
    app.account.runs.last_run("crm_sync"), app.account.runs.last_success("crm_sync")
    app.account.runs.totals("call_processor", utcnow() - timedelta(days=1), ("costUsd",))  # status's LLM usage
    app.account.runs.mark_abandoned(timedelta(hours=6))
    _webhook_deliveries(app, executions[:5])
    yield recorder, client[TEST_DB]
    client.close()
    groq.stop()


def _webhook_deliveries(app, executions: list[dict]) -> None:
    """Deliveries accepted (one twice), processed, counted, and read back by `status`."""
    for execution in executions + executions[:1]:
        app.inbox.accept(execution["id"], execution["status"], None, json.dumps(execution).encode())
    assert app.webhook_processor.process_batch() == len(executions)
    app.deliveries.count("accepted", len(executions))
    app.deliveries.flush(force=True)
    app.inbox.waiting(), app.inbox.lags_since(utcnow() - timedelta(days=1))  # status's webhook figures
    app.deliveries.totals(utcnow() - timedelta(days=1))


def test_every_query_the_jobs_send_is_answered_from_an_index(recorded):
    recorder, db = recorded
    seen = {(command, collection) for command, collection, _ in recorder.queries}
    # The hot paths are among what was recorded, or the test would prove nothing about them.
    for expected in [("find", CUSTOMERS),  # a page's customers, by every spelling of their numbers
                     ("find", CUSTOMER_CALLS), ("aggregate", CUSTOMER_CALLS),  # applied calls, counts
                     ("update", CUSTOMERS), ("update", CALLS),  # the page's upserts
                     ("find", CALLS),  # the page's "already stored final" check
                     ("findAndModify", CALLS),  # the analyzer's claim
                     ("findAndModify", CONTACTS), ("find", "sync_state"), ("find", "sync_runs"),
                     ("distinct", "sync_runs"), ("aggregate", "sync_runs"),
                     ("find", "llm_batches"), ("findAndModify", "llm_batches"),  # the Batch API lane's jobs
                     ("find", SUPPRESSIONS), ("update", SUPPRESSIONS),  # the writers' checks, forget's entry
                     ("delete", CUSTOMERS), ("delete", ACTIVITIES), ("update", SYNC_STATE),  # the erasure
                     ("find", WEBHOOK_INBOX), ("update", WEBHOOK_INBOX)]:  # the webhook processor's claims
        assert expected in seen, f"no {expected[0]} on {expected[1]} was recorded"

    scans = []
    for (command, collection, shape), query in sorted(recorder.queries.items(), key=lambda item: item[0]):
        stages = plan_stages(db, collection, query["filter"], query["sort"], query["hint"])
        if ("COLLSCAN" in stages and (command, collection, shape) not in PLANNER_GAPS
                and (command, collection) not in WHOLE_COLLECTION_READS and not by_id(query["filter"])):
            scans.append(f"{command} {collection} {shape}: {' <- '.join(stages)}")
    assert not scans, "collection scans:\n" + "\n".join(scans)


PHONE = normalize_phone("+91 98765 43210", "IN").key


# A CRM consumer's "find this customer / contact" as it writes it, a call by id, and "what
# changed since T" (docs/collections.md); T and C are filled in from the recorded run's data.
# A CRM front end's queries name the account (`userId`) first, as every index does; the single
# account of ACCOUNT_SOURCE=env is `null`.
ACCOUNT = None
CONSUMER_QUERIES = [
    (CUSTOMERS, {"userId": ACCOUNT, "phone": PHONE}, None, "phone_unique"),
    (CONTACTS, {"userId": ACCOUNT, "phone": PHONE}, None, "phone_unique"),
    (CALLS, {"userId": ACCOUNT, "callId": "call-00001"}, None, "callId_unique"),
    (CALLS, {"userId": ACCOUNT, "customerPhone": PHONE}, None, "customerPhone"),
    (CUSTOMER_CALLS, {"userId": ACCOUNT, "phone": PHONE}, None, "phone"),
    (CUSTOMERS, {"userId": ACCOUNT, "updatedAt": {"$gte": "T"}}, {"updatedAt": 1}, "updatedAt"),
    (CALLS, {"userId": ACCOUNT, "updatedAt": {"$gte": "T"}}, {"updatedAt": 1}, "updatedAt"),
    (CONTACTS, {"userId": ACCOUNT, "updatedAt": {"$gte": "T"}}, {"updatedAt": 1}, "updatedAt"),
    ("activities", {"userId": ACCOUNT, "at": {"$gte": "T"}}, {"at": 1}, "at"),
    ("activities", {"userId": ACCOUNT, "contactId": "C"}, {"at": -1}, "contactId_at"),
    ("sync_runs", {"userId": ACCOUNT, "job": "crm_sync"}, {"startedAt": -1}, "job_startedAt"),
    ("sync_runs", {"startedAt": {"$gte": "T"}}, None, "ttl_startedAt"),
    ("activities", {"userId": ACCOUNT, "customerPhone": PHONE}, None, "customerPhone"),
    (CALLS, {"userId": ACCOUNT, "callAt": {"$gte": "T"}}, {"callAt": 1}, "callAt"),
]


def test_consumer_queries_are_answered_from_their_index(recorded):
    _, db = recorded
    some = db["activities"].find_one({"contactId": {"$exists": True}}, {"at": 1, "contactId": 1})
    values = {"T": some["at"] - timedelta(days=1), "C": some["contactId"]}
    wrong = []
    for collection, filter, sort, index in CONSUMER_QUERIES:
        filter = {field: ({op: values.get(v, v) for op, v in value.items()} if isinstance(value, dict)
                          else values.get(value, value)) for field, value in filter.items()}
        stages = plan_stages(db, collection, filter, sort)
        if f"IXSCAN({index})" not in stages:
            wrong.append(f"{collection} {filter}: {' <- '.join(stages)}, not {index}")
    assert not wrong, "\n".join(wrong)
