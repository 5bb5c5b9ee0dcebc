"""Both jobs end to end: real HTTP against the local fake Bolna API, mongomock for MongoDB."""
from datetime import datetime

import pytest

from fakes.dataset import generate, iso
from models.execution import parse_execution
from services.database import CALLS, CUSTOMERS, SYNC_STATE
from services.run_records import RunRecorder
from tests.faults import customer_call_ids
from tests.helpers import AGENT, build_app, execution, now_utc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def serve(settings, mongo, bolna_server):
    """serve(executions) -> (a started fake Bolna, a Runtime syncing from it)."""
    def start(executions, agents=(AGENT,), **options):
        bolna = bolna_server(executions, agents, **options)
        return bolna, build_app(settings, mongo, bolna)

    return start


def test_two_spellings_of_one_number_are_one_customer(serve, db):
    bolna, app = serve([execution("+91 98765 43210", minutes_ago=60), execution("9876543210", minutes_ago=30)])
    assert app.run_job("crm_sync")["status"] == "ok"
    customers = list(db[CUSTOMERS].find())
    assert len(customers) == 1
    assert customers[0]["phone"] == "+919876543210" and customers[0]["callCount"] == 2
    assert customers[0]["phoneRaw"] == "9876543210"  # the newest call's spelling


def test_rerun_creates_nothing_and_keeps_processed(serve, db):
    bolna, app = serve([execution(minutes_ago=m) for m in (10, 20, 30)])
    for job in ("crm_sync", "call_processor"):
        app.run_job(job)
    before = {name: db[name].count_documents({}) for name in (CUSTOMERS, CALLS)}
    assert db[CALLS].count_documents({"processed": True}) == 3
    for job in ("crm_sync", "call_processor"):
        assert app.run_job(job, full=True)["status"] == "ok"
    assert {name: db[name].count_documents({}) for name in (CUSTOMERS, CALLS)} == before
    assert db[CALLS].count_documents({"processed": True}) == 3
    assert db[CUSTOMERS].find_one()["callCount"] == 3


def test_changed_call_is_updated_in_place_and_keeps_its_analysis(serve, db):
    record = execution(call_id="c-1")
    bolna, app = serve([record])
    app.run_job("call_processor")
    analysis = db[CALLS].find_one({"callId": "c-1"})["analysis"]
    bolna.update_execution("c-1", total_cost=9.0, updated_at=iso(now_utc()))
    assert app.run_job("call_processor", full=True)["counts"]["updated"] == 1
    call = db[CALLS].find_one({"callId": "c-1"})
    assert call["costCents"] == 9.0 and call["processed"] is True and call["analysis"] == analysis
    assert db[CALLS].count_documents({}) == 1


def test_a_stored_call_costs_one_write_command_per_page(settings, mongo, bolna_server, db):
    """Calls already stored go straight to their update: a follow-up by id and a changed call
    listed again cost one write command on `calls` per page, not an insert the unique `callId`
    refuses and then the update; a new call on the same page is still a plain insert."""
    later = execution(call_id="later", status="scheduled", minutes_ago=600)
    bolna = bolna_server([later] + [execution(call_id=f"c-{n}", minutes_ago=30 + n) for n in range(3)], (AGENT,))
    sent: list[tuple[str, str]] = []
    app = build_app(settings, mongo, bolna, hook=lambda collection, method: sent.append((collection, method)))
    app.run_job("call_processor")
    for n in range(3):
        bolna.update_execution(f"c-{n}", total_cost=9.0, updated_at=iso(now_utc()))
    bolna.update_execution("later", status="completed", conversation_duration=30.0, updated_at=iso(now_utc()))
    bolna.add_execution(execution(call_id="new", minutes_ago=20))
    sent.clear()
    record = app.run_job("call_processor", full=True)
    # Two pages: the follow-up of "later", then the listing (c-0..2 changed, "new").
    assert sent.count((CALLS, "bulk_write")) == 2
    assert record["counts"]["pendingFinished"] == 1
    assert (record["counts"]["inserted"], record["counts"]["updated"]) == (1, 4)
    assert db[CALLS].count_documents({"costCents": 9.0}) == 3 and db[CALLS].count_documents({}) == 5
    assert db[CALLS].find_one({"callId": "later"})["terminal"] is True


def test_a_call_stored_after_its_page_was_read_gets_its_update(settings, mongo, bolna_server, db):
    """A race the page's read cannot see (the call stored meanwhile by a webhook, another replica):
    written as new, its insert is refused by the unique `callId` and its update runs instead."""
    app = build_app(settings, mongo, bolna_server([], (AGENT,)))
    writer, recorder = app.account.writers.calls, RunRecorder("call_processor")
    record = execution(call_id="raced")
    writer.write([parse_execution(record, "IN")], recorder, "agent-1")  # the other writer
    db[CALLS].update_one({"callId": "raced"}, {"$set": {"processed": True}})
    record.update(total_cost=9.0, updated_at=iso(now_utc()))
    writer.write([parse_execution(record, "IN")], recorder, "agent-1", stored_ids=())
    [call] = db[CALLS].find({"callId": "raced"})
    assert (call["costCents"], call["processed"]) == (9.0, True)
    assert (recorder.counts["inserted"], recorder.counts["updated"]) == (1, 1)


def test_malformed_records_are_errors_and_the_rest_of_the_page_is_written(serve, db):
    good = execution("+14155552671", call_id="good")
    no_id = execution("+14155550000")
    del no_id["id"]
    bad_extracted = execution("+919811112222", call_id="bad-extracted", extracted="{name: Ravi, budget")
    bad_phone = execution("12345", call_id="bad-phone")
    bolna, app = serve([good, no_id, bad_extracted, bad_phone])
    crm = app.run_job("crm_sync")
    calls = app.run_job("call_processor")
    assert crm["status"] == calls["status"] == "partial"
    codes = {(e["code"], e.get("callId")) for e in crm["errors"]}
    assert {("missing_id", None), ("bad_extracted_data", "bad-extracted"), ("invalid_phone", "bad-phone")} <= codes
    assert {c["callId"] for c in db[CALLS].find()} == {"good", "bad-extracted", "bad-phone"}
    assert db[CALLS].find_one({"callId": "bad-extracted"})["extractedData"] == "{name: Ravi, budget"
    invalid = db[CUSTOMERS].find_one({"phone": "12345"})
    assert invalid["phoneValid"] is False and invalid["callCount"] == 1
    assert db[CUSTOMERS].count_documents({}) == 3


def test_invalid_numbers_are_never_merged(serve, db):
    bolna, app = serve([execution("12345"), execution("123456"), execution("+0000")])
    app.run_job("crm_sync")
    assert sorted(c["phone"] for c in db[CUSTOMERS].find()) == ["+0000", "12345", "123456"]


def test_record_written_before_normalization_is_found_by_its_raw_number(serve, db):
    db[CUSTOMERS].insert_one({"phone": "09876543210", "name": "Old record", "callIds": ["legacy"]})
    bolna, app = serve([execution("+91 98765 43210", extracted={"email": "r@x.in"})])
    app.run_job("crm_sync")
    [customer] = db[CUSTOMERS].find()
    assert customer["phone"] == "+919876543210"
    assert customer["name"] == "Old record" and customer["email"] == "r@x.in"
    assert customer["callCount"] == 2


def test_newest_call_wins_even_when_pages_arrive_newest_first(serve, db, settings):
    old = execution(minutes_ago=600, extracted={"name": "R. Sharma", "interest": "2 BHK", "user_interested": True})
    new = execution(minutes_ago=60, extracted={"name": "Ravi Sharma", "appointment_booked": True})
    bolna, app = serve([old, new])  # one page, newest first, as the API sends it
    app.run_job("crm_sync")
    customer = db[CUSTOMERS].find_one()
    assert customer["name"] == "Ravi Sharma" and customer["status"] == "Booked"
    assert customer["interest"] == "2 BHK"  # an older call fills a gap
    assert customer["lastCallId"] == new["id"]


def test_missed_call_does_not_erase_intent(serve, db):
    booked = execution(minutes_ago=120, extracted={"appointment_booked": True})
    missed = execution(minutes_ago=10, status="no-answer")
    bolna, app = serve([booked, missed])
    app.run_job("crm_sync")
    customer = db[CUSTOMERS].find_one()
    assert customer["status"] == "Booked" and customer["lastCallId"] == missed["id"]


def test_steady_state_costs_one_request_per_agent(serve, db):
    agents, executions = generate(agents=2, per_agent=120, seed=3, span_days=5)
    bolna, app = serve(executions, agents=agents)
    for job in ("crm_sync", "call_processor"):
        assert app.run_job(job)["status"] == "ok"
    assert db[CALLS].count_documents({}) == 240
    before = bolna.request_count()
    record = app.run_job("crm_sync")
    assert bolna.request_count() - before == 1 + 2  # agent discovery + one page per agent
    assert record["counts"].get("inserted", 0) == 0 and record["counts"].get("updated", 0) == 0


def test_trimmed_list_fetches_each_full_record_once(serve, db):
    bolna, app = serve([execution(minutes_ago=m) for m in (5, 6, 7)], projection="trimmed")
    app.run_job("call_processor")
    assert bolna.request_count("/executions/") == 3
    assert all(c["transcript"] for c in db[CALLS].find())
    app.run_job("call_processor")
    assert bolna.request_count("/executions/") == 3  # stored final: not fetched again


def test_in_progress_call_is_refreshed_until_terminal(serve, db):
    pending = execution(call_id="live", status="in-progress", minutes_ago=20)
    bolna, app = serve([pending, execution(minutes_ago=200)])
    app.run_job("call_processor")
    app.run_job("crm_sync")
    call = db[CALLS].find_one({"callId": "live"})
    assert call["terminal"] is False and call["processed"] is False and "analysis" not in call
    assert db[CUSTOMERS].count_documents({}) == 1  # no customer from an unfinished call
    cursor = db[SYNC_STATE].find_one({"_id": "call_processor:agent-1"})["cursor"]
    assert cursor <= call["callAt"]  # held at the unfinished call
    bolna.update_execution("live", status="completed", conversation_duration=55.0,
                           transcript="assistant: hi\nuser: please deliver it tomorrow, I will pay cash\n",
                           extracted_data={"name": "Asha"}, updated_at=pending["updated_at"][:-5] + "9.000Z")
    app.run_job("call_processor")
    app.run_job("crm_sync")
    call = db[CALLS].find_one({"callId": "live"})
    assert call["terminal"] is True and call["processed"] is True
    assert db[CUSTOMERS].find_one({"lastCallId": "live"})["name"] == "Asha"


def test_bolna_outage_makes_the_run_partial_and_the_next_run_completes(serve, db):
    agents, executions = generate(agents=1, per_agent=120, seed=5, span_days=3)
    bolna, app = serve(executions, agents=agents)
    # Page 2 fails as often as the client tries (settings: 3 attempts).
    bolna.inject(r"/executions$", status=200, times=1)
    bolna.inject(r"/executions$", status=503, times=3)
    record = app.run_job("call_processor")
    assert record["status"] == "partial"
    assert any(e["code"] == "bolna_error" for e in record["errors"])
    # No window was completed: the cursor not advanced.
    assert db[SYNC_STATE].count_documents({"job": "call_processor"}) == 0
    assert app.run_job("call_processor")["status"] == "ok"
    assert db[CALLS].count_documents({}) == 120


def test_refused_key_fails_the_run_without_retrying(serve, db):
    bolna, app = serve([execution()])
    bolna.api_key = "another-key"
    record = app.run_job("crm_sync")
    assert record["status"] == "failed"
    assert "refused the API key" in record["errors"][-1]["message"]
    assert bolna.request_count() == 1


def test_explicit_agent_ids_skip_discovery(serve, db, settings):
    bolna, app = serve([execution()])
    app.account.feed.agent_ids = ("agent-1",)
    app.run_job("crm_sync")
    assert bolna.request_count("/v2/agent/all") == 0


def test_legacy_spellings_of_one_number_are_merged_into_one_customer(serve, db):
    # Stored before normalization existed, in the spellings people write.
    db[CUSTOMERS].insert_many([
        {"phone": "098765-43210", "callIds": ["old-1"], "callCount": 1, "name": "Ravi (old)",
         "lastCallAt": datetime(2026, 1, 1), "status": "Booked", "statusAt": datetime(2026, 1, 1)},
        {"phone": "+919876543210", "callIds": ["old-2"], "callCount": 1, "email": "r@x.in",
         "lastCallAt": datetime(2026, 2, 1), "status": "Contacted", "statusAt": datetime(2026, 2, 1)},
        {"phone": "+91.98765.43210", "callIds": ["old-3"], "callCount": 1, "name": "Ravi (newer)",
         "lastCallAt": datetime(2026, 3, 1)}])
    bolna, app = serve([execution("98765 43210", extracted={"user_interested": True})])
    assert app.run_job("crm_sync")["status"] == "ok"
    [customer] = db[CUSTOMERS].find()
    assert customer["phone"] == "+919876543210" and customer["callCount"] == 4 and "callIds" not in customer
    assert (customer["name"], customer["email"]) == ("Ravi (newer)", "r@x.in")
    assert customer["status"] == "Booked"  # an old Booked outranks today's Interested
    assert customer_call_ids(db) == {"+919876543210": {"old-1", "old-2", "old-3", customer["lastCallId"]}}

    assert app.run_job("crm_sync", full=True)["status"] == "ok"  # again: nothing more merged or counted
    assert db[CUSTOMERS].count_documents({}) == 1 and db[CUSTOMERS].find_one()["callCount"] == 4


def test_a_refused_full_record_does_not_hold_the_cursor(serve, db):
    gone = execution(call_id="gone", minutes_ago=300)
    bolna, app = serve([gone, execution(minutes_ago=30)], projection="trimmed")
    bolna.inject(r"^/executions/gone$", status=404, times=10)
    record = app.run_job("call_processor")
    assert [e["callId"] for e in record["errors"]] == ["gone"]
    assert db[SYNC_STATE].find_one({"job": "call_processor"})["cursor"] > db[CALLS].find_one()["callAt"]


def test_a_refused_key_on_a_full_record_stops_the_run(serve, db):
    bolna, app = serve([execution(minutes_ago=m) for m in (5, 6, 7)], projection="trimmed")
    bolna.inject(r"^/executions/", status=403, times=10)
    record = app.run_job("call_processor")
    assert record["status"] == "failed" and "refused the API key" in record["errors"][-1]["message"]
    assert bolna.request_count("/executions/") == 1


def test_a_call_unfinished_for_hours_is_followed_by_id_until_it_is_terminal(serve, db):
    scheduled = execution("+14155552671", call_id="later", status="scheduled", minutes_ago=600)
    bolna, app = serve([scheduled, execution(minutes_ago=30)])
    for job in ("crm_sync", "call_processor"):
        app.run_job(job)
    cursor = db[SYNC_STATE].find_one({"_id": "call_processor:agent-1"})
    assert cursor["cursor"] > db[CALLS].find_one({"callId": "later"})["callAt"]  # not held
    assert [p["callId"] for p in cursor["pending"]] == ["later"]
    requests = bolna.request_count("/executions/")
    app.run_job("call_processor")  # still scheduled: fetched by id, still followed
    assert bolna.request_count("/executions/") == requests + 1
    bolna.update_execution("later", status="completed", conversation_duration=30.0,
                           transcript="assistant: hello\nuser: yes, please book the visit for Sunday\n",
                           extracted_data={"name": "Meera", "appointment_booked": True})
    for job in ("crm_sync", "call_processor"):
        assert app.run_job(job)["counts"]["pendingFinished"] == 1
    assert db[CALLS].find_one({"callId": "later"})["processed"] is True
    assert db[CUSTOMERS].find_one({"lastCallId": "later"})["status"] == "Booked"
    assert db[SYNC_STATE].find_one({"_id": "crm_sync:agent-1"})["pending"] == []
