"""Retention and erasure (services/privacy), end to end: real HTTP against the fake Bolna API, both
jobs, the analyzer, and `forget` as the command runs it. Collected again on a real server by
tests/test_mongodb_integration_privacy.py."""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from fakes.dataset import generate
from fakes.mongo_hooks import HookedClient
from models.call import TRANSCRIPT_FIELDS
from models.execution import parse_execution
from services.database import (ACTIVITIES, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, ERASURES, SUPPRESSIONS,
                               SYNC_STATE)
from services.privacy import (PERSONAL_CALL_FIELDS, Eraser, PhoneHasher, PrivacyKeyError, RetentionPass, RetentionPolicy,
                              forget)
from services.run_records import RunRecorder
from tests.conftest import TEST_DB
from tests.faults import assert_customers_match
from tests.helpers import AGENT, build_app, execution
from tests.test_faults_mongo import snapshot
from utils.phone import lookup_keys, normalize_phone
from worker.cli import main as cli_main

pytestmark = pytest.mark.timeout(120)

KEY = "a-test-key-of-32-characters-long"
PERSON = normalize_phone("+91 98765 43210", "IN")
DIGITS = "9876543210"  # the person's national number: found nowhere after an erasure
OTHERS = ("+14155552671", "+919811112222")
_COLLECTIONS = (CUSTOMERS, CUSTOMER_CALLS, CALLS, CONTACTS, ACTIVITIES, SYNC_STATE)


@pytest.fixture
def serve(settings, mongo, bolna_server):
    """serve(executions, **settings) -> (a started fake Bolna, a Runtime syncing from it)."""
    def start(executions, **overrides):
        bolna = bolna_server(executions, [AGENT])
        return bolna, build_app(settings.with_overrides(**{"privacy_hash_key": KEY, **overrides}), mongo, bolna)

    return start


def person_and_others() -> list[dict]:
    """The person's calls in three spellings (one still in progress after 7 hours: followed by
    id), and two other people's calls."""
    return [execution("+91 98765 43210", minutes_ago=300, call_id="p-1"),
            execution("09876543210", minutes_ago=200, call_id="p-2", extracted={"name": "Ravi", "email": "r@x.in"}),
            execution("919876543210", minutes_ago=100, call_id="p-3", direction="inbound"),
            execution("98765 43210", minutes_ago=7 * 60, call_id="p-4", status="in-progress"),
            execution(OTHERS[0], minutes_ago=250, call_id="o-1"),
            execution(OTHERS[1], minutes_ago=150, call_id="o-2", extracted={"name": "Asha"}),
            execution(OTHERS[1], minutes_ago=50, call_id="o-3", status="no-answer")]


def sync(app, **options) -> dict[str, dict]:
    return {job: app.run_job(job, **options) for job in ("crm_sync", "call_processor")}


def dump(db, collections=_COLLECTIONS) -> dict[str, dict]:
    return {name: {str(doc["_id"]): doc for doc in db[name].find()} for name in collections}


def of_person(name: str, doc: dict, call_ids: set[str]) -> bool:
    spellings = set(lookup_keys(PERSON))
    return (doc.get("phone") in spellings or doc.get("customerPhone") in spellings
            or doc.get("callId") in call_ids or (name == CUSTOMER_CALLS and doc["_id"] in call_ids))


def others(db, call_ids: set[str]) -> dict[str, dict]:
    """Everything that is not the person's; follow-ups without the person's calls."""
    kept = {}
    for name, docs in dump(db).items():
        kept[name] = {key: doc for key, doc in docs.items() if not of_person(name, doc, call_ids)}
        for doc in kept[name].values():
            if "pending" in doc:
                doc["pending"] = [p for p in doc["pending"] if p["callId"] not in call_ids]
    return kept


def assert_person_gone(db):
    """No document anywhere holds the number in any spelling, nor a personal field of its calls."""
    for name in db.list_collection_names():
        for doc in db[name].find():
            assert DIGITS not in "".join(ch for ch in repr(doc) if ch.isdigit() or ch == "'"), \
                f"the number is still in {name}: {doc['_id']}"
    for call in db[CALLS].find({"erasedAt": {"$exists": True}}):
        assert not set(call) & set(PERSONAL_CALL_FIELDS)
        assert not any(call.get("analysis", {}).get(name) for name in ("summary", "reasoning", "extra", "error"))


def test_forget_finds_every_spelling_in_every_collection(serve, db):
    bolna, app = serve(person_and_others())
    sync(app)
    # Records written before numbers were normalized, under other spellings.
    db[CUSTOMERS].insert_one({"phone": "0091 98765 43210", "name": "Legacy", "crmOwner": "Meera"})
    db[CONTACTS].insert_one({"phone": "098765-43210", "tag": "Interested"})
    assert db[SYNC_STATE].count_documents({"pending.callId": "p-4"}) == 2  # both jobs follow it
    person_calls = {"p-1", "p-2", "p-3", "p-4"}
    before_others = others(db, person_calls)
    activities = sum(of_person(ACTIVITIES, doc, person_calls) for doc in db[ACTIVITIES].find())
    assert activities >= 4  # a status change, and an AI decision per analyzed call
    analyzed = {c["callId"]: c["analysis"] for c in db[CALLS].find({"callId": {"$in": ["p-1", "p-2", "p-3"]}})}

    removed = forget(db, normalize_phone("0091-98765-43210", "IN"), PhoneHasher(KEY))

    assert removed == {"customers": 2, "customerCalls": 3, "calls": 4, "contacts": 2, "activities": activities,
                       "stageReviews": 0, "followUps": 2, "webhookInbox": 0}
    assert_person_gone(db)
    assert others(db, person_calls) == before_others
    calls = {c["callId"]: c for c in db[CALLS].find({"callId": {"$in": sorted(person_calls)}})}
    assert set(calls) == person_calls  # kept, for the business's totals
    for call_id, call in calls.items():
        assert call["erasedAt"] and call["processed"] is True and call["costCents"] == 2.5
        if call_id in analyzed:  # the result stays, its text goes
            assert call["analysis"]["tag"] == analyzed[call_id]["tag"] and "summary" not in call["analysis"]
        else:
            assert call["analysis"]["skipped"] == "erased"
    digest = PhoneHasher(KEY).digest(PERSON.key)
    assert db[SUPPRESSIONS].find_one({"_id": digest}) is not None
    record = db[ERASURES].find_one({"_id": digest})
    assert record["removed"] == {name: n for name, n in removed.items() if n}
    assert DIGITS not in repr(record) and set(record) == {"_id", "userId", "keyId", "requestedAt", "erasedAt", "removed"}


def test_dry_run_counts_what_forget_removes_and_changes_nothing(serve, db):
    bolna, app = serve(person_and_others())
    sync(app)
    before = dump(db, _COLLECTIONS + (SUPPRESSIONS, ERASURES))
    counts = Eraser(db).find(normalize_phone("+91-98765-43210", "IN")).counts()
    assert dump(db, _COLLECTIONS + (SUPPRESSIONS, ERASURES)) == before
    assert counts == forget(db, PERSON, PhoneHasher(KEY))
    assert Eraser(db).find(PERSON).counts() == dict.fromkeys(counts, 0)


def test_a_second_forget_changes_nothing(serve, db):
    bolna, app = serve(person_and_others())
    sync(app)
    forget(db, PERSON, PhoneHasher(KEY))
    before = dump(db, _COLLECTIONS + (SUPPRESSIONS, ERASURES))
    assert forget(db, normalize_phone("9876543210", "IN"), PhoneHasher(KEY)) == dict.fromkeys(
        ("customers", "customerCalls", "calls", "contacts", "activities", "stageReviews", "followUps",
         "webhookInbox"), 0)
    assert dump(db, _COLLECTIONS + (SUPPRESSIONS, ERASURES)) == before


def test_a_resync_of_the_same_calls_does_not_bring_the_person_back(serve, db):
    bolna, app = serve(person_and_others())
    sync(app)
    forget(db, PERSON, PhoneHasher(KEY))
    tombstones = {key: doc for key, doc in dump(db, (CALLS,))[CALLS].items() if doc["callId"].startswith("p-")}
    # Bolna changes the person's calls, finishes the one in progress, and the person calls again.
    bolna.update_execution("p-1", total_cost=7.0)
    bolna.update_execution("p-4", status="completed", transcript="user: call me back", conversation_duration=30.0)
    bolna.add_execution(execution("+91 (98765) 43210", minutes_ago=5, call_id="p-5"))
    bolna.add_execution(execution(OTHERS[0], minutes_ago=5, call_id="o-4"))

    runs = sync(app, full=True)

    assert_person_gone(db)
    # Every call of the number is read again by the CRM sync (its links are gone); the call
    # processor reads the changed and new ones (p-2 and p-3 are stored final, unchanged).
    assert runs["crm_sync"]["counts"]["suppressed"] == 5 and runs["call_processor"]["counts"]["suppressed"] == 3
    stored = dump(db, (CALLS,))[CALLS]
    assert {key: doc for key, doc in stored.items() if doc["callId"].startswith("p-")} == tombstones
    assert db[CALLS].find_one({"callId": "o-4"})["processed"] is True  # the others are synced as ever
    assert db[CUSTOMERS].find_one({"phone": OTHERS[0]})["callCount"] == 2


@pytest.mark.parametrize("job,first_write", [("crm_sync", CUSTOMER_CALLS), ("call_processor", CALLS)])
def test_forget_while_a_page_of_the_person_is_being_written_leaves_nothing(settings, mongo, bolna_server, db,
                                                                           job, first_write):
    """The writer checked the suppression list before `forget` added the number, and its page
    lands after forget's sweep: its own check after the write must sweep again."""
    bolna = bolna_server(person_and_others(), [AGENT])
    fired = []

    def forget_now(collection: str, method: str) -> None:
        if (collection, method) == (first_write, "bulk_write") and not fired:
            fired.append(True)
            forget(db, PERSON, PhoneHasher(KEY))

    app = build_app(settings.with_overrides(privacy_hash_key=KEY), mongo, bolna, hook=forget_now)
    assert app.run_job(job)["status"] in ("ok", "partial")
    assert fired
    sync(app)
    assert_person_gone(db)
    assert {c["phone"] for c in db[CUSTOMERS].find()} == set(OTHERS)
    assert {c["callId"] for c in db[CALLS].find({"erasedAt": None})} == {"o-1", "o-2", "o-3"}


def test_forget_while_the_persons_call_is_analyzed_leaves_nothing(serve, settings, mongo, db):
    bolna, app = serve(person_and_others(), llm_calls_per_run=0)
    sync(app)  # stored, not analyzed
    fired = []

    def forget_now(collection: str, method: str) -> None:
        # The analyzer looks up the contact of the person's call: the analysis is done, not written.
        if (collection, method) == (CONTACTS, "find") and not fired:
            fired.append(True)
            forget(db, PERSON, PhoneHasher(KEY))

    # One at a time, oldest first: the first call analyzed is the person's (300 minutes ago).
    analyzer = build_app(settings.with_overrides(privacy_hash_key=KEY, llm_concurrency=1), mongo, bolna,
                         hook=forget_now)
    record = analyzer.run_job("call_processor")
    assert fired and record["status"] in ("ok", "partial")
    assert_person_gone(db)
    assert {c["phone"] for c in db[CONTACTS].find()} == set(OTHERS)


def test_the_daemon_syncing_at_the_same_time_loses_no_other_data(settings, mongo, bolna_server, db):
    agents, executions = generate(agents=2, per_agent=80, seed=11, span_days=5)
    parsed = {record["id"]: parse_execution(record, "IN") for record in executions}
    counts = Counter(e.customer_phone.key for e in parsed.values() if e.customer_phone and e.terminal)
    person = next(key for key, n in counts.most_common() if n >= 2)
    person_calls = {call_id for call_id, e in parsed.items() if e.customer_phone and e.customer_phone.key == person}
    bolna = bolna_server(executions, agents)
    daemon = build_app(settings.with_overrides(privacy_hash_key=KEY, llm_calls_per_run=200), mongo, bolna)
    reference_db = HookedClient(mongo)[TEST_DB + "_reference"]
    reference = build_app(settings.with_overrides(mongodb_db=TEST_DB + "_reference", llm_calls_per_run=200),
                          mongo, bolna)
    try:
        sync(reference)
        errors = []

        def run_daemon():
            try:
                for _ in range(2):
                    sync(daemon)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=run_daemon)
        thread.start()
        phone = normalize_phone(person, "IN")
        while thread.is_alive():
            forget(db, phone, PhoneHasher(KEY))
            thread.join(0.05)
        assert not errors
        assert not any(Eraser(db).find(phone).counts().values())

        truth = {call_id: record for call_id, record in bolna.ground_truth().items() if call_id not in person_calls}
        assert_customers_match(db, truth, "IN")
        mine, theirs = snapshot(db), snapshot(reference_db)
        for name, docs in theirs.items():
            if name == "activities":
                assert mine[name] == [a for a in docs if a[0] not in person_calls]
            else:
                expected = {key: value for key, value in docs.items() if key != person and key not in person_calls}
                assert {key: value for key, value in mine[name].items() if key not in person_calls} == expected
        assert all(c.get("erasedAt") for c in db[CALLS].find({"callId": {"$in": sorted(person_calls)}}))
    finally:
        mongo.drop_database(TEST_DB + "_reference")


def _aged(days: float, call_id: str, customer: str = OTHERS[0]) -> dict:
    return execution(customer, minutes_ago=int(days * 1440), call_id=call_id)


def test_transcript_retention_removes_exactly_the_old_transcripts(serve, db):
    bolna, app = serve([_aged(0.5, "young"), _aged(3, "old-1"), _aged(5, "old-2", OTHERS[1])])
    sync(app)
    before = dump(db)
    bolna, later = serve([], transcript_retention_days=2)  # the setting turned on

    record = later.run_job("call_processor")

    assert record["counts"]["transcriptsRemoved"] == 2 and record["counts"]["retentionPasses"] == 1
    after = dump(db)
    for name in _COLLECTIONS:
        if name not in (CALLS, SYNC_STATE):
            assert after[name] == before[name], f"{name} changed"
    for key, call in before[CALLS].items():
        if call["callId"] == "young":
            assert after[CALLS][key] == call
            continue
        stripped = after[CALLS][key]
        assert stripped["transcriptRemovedAt"] and not set(stripped) & set(TRANSCRIPT_FIELDS)
        assert {k: v for k, v in stripped.items() if k not in ("transcriptRemovedAt", "updatedAt")} == \
            {k: v for k, v in call.items() if k not in TRANSCRIPT_FIELDS + ("updatedAt",)}
        assert stripped["analysis"]["summary"] and stripped["bolnaSummary"] == call["bolnaSummary"]
    # A full re-sync of a changed old call does not bring its transcript back.
    resync = serve([_aged(3, "old-1")], transcript_retention_days=2)[1]  # Bolna lists it again, changed
    assert later.run_job("call_processor", full=True)["counts"].get("transcriptsRemoved", 0) == 0
    assert resync.run_job("call_processor", full=True)["status"] == "ok"
    assert "transcript" not in db[CALLS].find_one({"callId": "old-1"})


def test_record_retention_removes_exactly_the_old_calls(serve, db):
    bolna, app = serve([_aged(0.5, "young"), _aged(3, "middle"), _aged(5, "old", OTHERS[1])])
    sync(app)
    before = dump(db)
    bolna, later = serve([_aged(5, "old", OTHERS[1])], record_retention_days=4)

    record = later.run_job("call_processor", full=True)  # the full re-sync reads the old call again

    assert record["counts"]["callsRemoved"] == 1 and record["counts"]["expired"] == 1
    after = dump(db)
    assert {c["callId"] for c in after[CALLS].values()} == {"young", "middle"}
    assert {key: doc for key, doc in before[CALLS].items() if doc["callId"] != "old"} == after[CALLS]
    for name in (CUSTOMERS, CUSTOMER_CALLS, CONTACTS, ACTIVITIES):
        assert after[name] == before[name], f"{name} changed"


def test_retention_works_in_small_batches_oldest_first(serve, db):
    bolna, app = serve([_aged(3 + n / 10, f"old-{n}") for n in range(5)] + [_aged(1, "young")])
    sync(app)
    retention = RetentionPass(db, RetentionPolicy(transcript_days=2), batch_size=2, max_batches=2)
    stripped = []
    for _ in range(3):
        recorder = RunRecorder("call_processor")
        retention.run(recorder)
        stripped.append(recorder.counts["transcriptsRemoved"])
        assert recorder.counts["retentionPasses"] == 1
    assert stripped == [4, 1, 0]
    assert db[CALLS].find_one({"callId": "young"})["transcript"]
    assert db[CALLS].count_documents({"transcriptRemovedAt": {"$exists": True}}) == 5


def test_without_the_key_the_daemon_refuses_to_start_once_numbers_were_erased(serve, settings, mongo, db):
    bolna, app = serve(person_and_others())
    sync(app)
    forget(db, PERSON, PhoneHasher(KEY))
    with pytest.raises(PrivacyKeyError, match="PRIVACY_HASH_KEY is not set"):
        build_app(settings.with_overrides(privacy_hash_key=None), mongo, bolna)
    with pytest.raises(PrivacyKeyError, match="not the key"):
        build_app(settings.with_overrides(privacy_hash_key="another-key-of-enough-length"), mongo, bolna)


def test_a_daemon_started_without_the_key_stops_syncing_when_a_number_is_erased(serve, settings, mongo, db):
    bolna, app = serve([execution(OTHERS[0], call_id="o-1")], privacy_hash_key=None)  # started: list empty
    forget(db, PERSON, PhoneHasher(KEY))  # another process, with the key
    bolna.add_execution(execution("+91 98765 43210", minutes_ago=5, call_id="p-9"))
    record = app.run_job("crm_sync")
    assert record["status"] == "failed" and "PRIVACY_HASH_KEY" in record["errors"][0]["message"]
    assert db[CUSTOMERS].count_documents({}) == 0


def test_calls_of_other_people_are_admitted_when_the_list_is_not_empty(serve, db):
    bolna, app = serve([execution(OTHERS[0], call_id="o-1", minutes_ago=20)])
    forget(db, PERSON, PhoneHasher(KEY))
    record = sync(app)
    assert "suppressed" not in record["crm_sync"]["counts"] and db[CUSTOMERS].count_documents({}) == 1
    assert db[CALLS].find_one({"callId": "o-1"})["transcript"]


@pytest.mark.parametrize("arguments,environment,message", [
    (["--phone", "call me maybe"], {"PRIVACY_HASH_KEY": KEY}, "--phone has no digits"),
    (["--phone", "12345"], {"PRIVACY_HASH_KEY": KEY}, "is not a valid number in DEFAULT_PHONE_REGION=IN"),
    (["--phone", "+91 98765 43210"], {}, "PRIVACY_HASH_KEY is not set"),
    (["--phone", "+91 98765 43210"], {"PRIVACY_HASH_KEY": "short"}, "PRIVACY_HASH_KEY is invalid"),
])
def test_forget_refuses_bad_input_with_a_clear_error_before_touching_the_database(
        monkeypatch, tmp_path, capsys, arguments, environment, message):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for variable in ("PRIVACY_HASH_KEY", "MONGODB_URI"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100")  # nothing listens
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    assert cli_main(["forget", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "12345" not in err and "98765" not in err and KEY not in err
