"""The CRM rules a sales team relies on, end to end through both jobs: status only moves up, each
field holds its newest value whatever order calls arrive in, and a customer is one real person."""
from datetime import datetime

import pytest

from fakes.mongo_hooks import WRITE_METHODS, HookedClient, WriteTrap
from models.customer import CustomerCall, StatusRanks, customer_upsert
from models.execution import parse_execution
from services.database import ACTIVITIES, CALLS, CONTACTS, CUSTOMER_CALLS, CUSTOMERS, account_view
from services.run_records import RunRecorder
from services.writers import merge_records
from tests.conftest import TEST_DB
from tests.faults import app_for, assert_matches_ground_truth, customer_call_ids
from tests.helpers import AGENT, execution
from utils.phone import normalize_phone
from worker.app import build_writers

pytestmark = pytest.mark.timeout(60)
SECOND_AGENT = {"id": "agent-2", "agent_name": "Support", "agent_status": "processed"}


@pytest.fixture
def serve_trimmed(settings, mongo, bolna_server):
    """serve_trimmed(executions) -> (a started fake Bolna, a Runtime syncing from it)."""
    def start(executions, agents=(AGENT,), **overrides):
        bolna = bolna_server(executions, agents, projection="trimmed")
        return bolna, app_for(settings.with_overrides(**overrides), mongo, bolna)

    return start


def test_a_booked_customer_stays_booked_after_later_calls(serve_trimmed, db):
    bolna, app = serve_trimmed([execution(call_id="booked", minutes_ago=300, extracted={"appointment_booked": True})])
    app.run_job("crm_sync")
    # Later calls, read by full runs: a cursor past their creation would not read them again.
    bolna.add_execution(execution(call_id="question", minutes_ago=200, extracted={"user_interested": True}))
    app.run_job("crm_sync", full=True)
    bolna.add_execution(execution(call_id="chat", minutes_ago=100, extracted={}))
    bolna.add_execution(execution(call_id="missed", minutes_ago=50, status="no-answer"))
    app.run_job("crm_sync", full=True)

    [customer] = db[CUSTOMERS].find()
    assert (customer["status"], customer["statusCallId"], customer["callCount"]) == ("Booked", "booked", 4)
    assert customer["lastCallId"] == "missed"  # a lower-ranked call still counts and dates the record
    changes = list(db[ACTIVITIES].find({"type": "status_change"}))
    assert [(a["from"], a["to"], a["callId"]) for a in changes] == [(None, "Booked", "booked")]
    assert changes[0]["customerPhone"] == "+919876543210" and changes[0]["reason"] == "first status"


def test_equal_ranks_follow_the_newest_call_and_each_change_is_an_activity(serve_trimmed, db):
    bolna, app = serve_trimmed([execution(call_id="interested", minutes_ago=300, extracted={"user_interested": True}),
                        execution(call_id="contacted", minutes_ago=400, extracted={})])
    app.run_job("crm_sync")
    bolna.add_execution(execution(call_id="callback", minutes_ago=100, extracted={"callback_user": True}))
    bolna.add_execution(execution(call_id="older-no", minutes_ago=200, extracted={"user_interested": False}))
    app.run_job("crm_sync", full=True)
    assert db[CUSTOMERS].find_one()["status"] == "Callback"
    changes = [(a["from"], a["to"], a["reason"]) for a in db[ACTIVITIES].find({"type": "status_change"}, sort=[("at", 1)])]
    assert changes == [(None, "Interested", "first status"),
                       ("Interested", "Callback", "a newer call of the same rank as Interested")]


def test_a_configured_precedence_applies_to_stored_records_too(serve_trimmed, db, mongo):
    bolna, app = serve_trimmed([execution(call_id="booked", minutes_ago=300, extracted={"appointment_booked": True})])
    app.run_job("crm_sync")
    bolna.add_execution(execution(call_id="not-now", minutes_ago=100, extracted={"user_interested": False}))
    app = app_for(app.settings.with_overrides(status_precedence=(("Not Interested",), ("Booked",))), mongo, bolna)
    app.run_job("crm_sync", full=True)
    assert db[CUSTOMERS].find_one()["status"] == "Not Interested"


def test_an_older_call_never_overwrites_a_newer_value_across_agents_and_runs(serve_trimmed, db):
    newer = execution(call_id="newer", minutes_ago=60, agent_id="agent-2",
                      extracted={"name": "Ravi Sharma", "address": {"line1": "12 MG Road", "city": "Pune"}})
    bolna, app = serve_trimmed([newer], agents=(AGENT, SECOND_AGENT))
    app.run_job("crm_sync")
    # The other agent's older call reaches the sync later (its agent was added, or a backfill).
    bolna.add_execution(execution(call_id="older", minutes_ago=600, extracted={"name": "R. Sharma", "email": "r@x.in"}))
    app.run_job("crm_sync", full=True)

    [customer] = db[CUSTOMERS].find()
    assert customer["name"] == "Ravi Sharma"  # not the older call's spelling
    assert customer["email"] == "r@x.in"  # an older call still fills what no newer call named
    assert customer["address"] == {"line1": "12 MG Road", "city": "Pune"}  # nested: kept whole, not "Pune"
    assert customer["fieldsAt"]["name"] > customer["fieldsAt"]["email"]
    assert customer["lastCallId"] == "newer"


def test_nested_extractions_name_the_customer_not_the_agent(serve_trimmed, db):
    bolna, app = serve_trimmed([execution(call_id="c1", extracted={"agent": {"name": "Priya"}, "customer": {"name": "Ravi"},
                                                           "lead": {"budget": {"objective": 5000000,
                                                                               "subjective": "50 lakhs",
                                                                               "confidence": 0.8}}})])
    app.run_job("crm_sync")
    app.run_job("call_processor")
    customer = db[CUSTOMERS].find_one()
    assert customer["name"] == "Ravi"
    assert customer["extracted"] == {"agent": {"name": "Priya"}, "lead": {"budget": 5000000}}
    call = db[CALLS].find_one({"callId": "c1"})
    assert call["extractedConfidence"] == {"lead": {"budget": 0.8}}


def test_the_agents_line_and_withheld_numbers_make_no_customer(serve_trimmed, db):
    agent_line = {"to_number": "+918045671234", "call_type": "inbound"}
    calls = [execution(call_id=f"outbound-blank-{n}", telephony_data={"to_number": "", "from_number": "+918045671234",
                                                                      "call_type": "outbound"}) for n in range(3)]
    calls += [execution(call_id=f"withheld-{n}", telephony_data={**agent_line, "from_number": withheld})
              for n, withheld in enumerate(["anonymous", "Restricted", "private"])]
    calls.append(execution("+91 98765 43210", call_id="real"))
    bolna, app = serve_trimmed(calls)
    runs = {name: app.run_job(name) for name in ("crm_sync", "call_processor")}

    assert runs["crm_sync"]["status"] == "ok"  # no error: such calls happen
    assert (runs["crm_sync"]["counts"]["missingNumber"], runs["crm_sync"]["counts"]["withheldNumber"]) == (3, 3)
    assert [c["phone"] for c in db[CUSTOMERS].find()] == ["+919876543210"]
    withheld = db[CALLS].find_one({"callId": "withheld-1"})
    assert (withheld["customerPhone"], withheld["customerPhoneMissing"], withheld["fromNumberRaw"]) == \
        (None, "withheld", "Restricted")
    assert db[CALLS].find_one({"callId": "outbound-blank-0"})["customerPhoneMissing"] == "missing"
    assert_matches_ground_truth(db, bolna)


def test_a_number_with_control_characters_is_its_own_invalid_customer_kept_as_sent(serve_trimmed, db):
    bolna, app = serve_trimmed([execution("98765\x0043210", call_id="odd"), execution("+91 98765 43210", call_id="real")])
    app.run_job("crm_sync")
    customers = {c["phone"]: c for c in db[CUSTOMERS].find()}
    assert set(customers) == {"+919876543210", "98765\x0043210"}
    assert customers["98765\x0043210"]["phoneValid"] is False
    assert customers["98765\x0043210"]["phoneRaw"] == "98765\x0043210"
    assert customers["+919876543210"]["phoneRaw"] == "+91 98765 43210"


def test_a_contact_follows_the_newest_analyzed_call_whatever_order_analyses_finish_in(serve_trimmed, db):
    newer = execution(call_id="newer", minutes_ago=60,
                      transcript="user: Yes, I want to buy it, please book the purchase today.\n")
    older = execution(call_id="older", minutes_ago=600,
                      transcript="user: I am not interested, do not call me again please.\n")
    bolna, app = serve_trimmed([newer], llm_calls_per_run=5)
    app.run_job("call_processor")
    tag_after_newer = db[CONTACTS].find_one()["tag"]
    bolna.add_execution(older)
    app.run_job("call_processor", full=True)  # the older call is analyzed last

    contact = db[CONTACTS].find_one()
    assert contact["tag"] == tag_after_newer and contact["analyzedCallAt"] == db[CALLS].find_one(
        {"callId": "newer"})["callAt"]
    assert {p["callId"] for p in contact["pastConversations"]} == {"newer", "older"}  # history keeps both
    decisions = {a["callId"]: a for a in db[ACTIVITIES].find({"type": "ai_analysis"})}
    assert decisions["older"]["appliedToContact"] is False and decisions["older"]["changes"] == {}
    assert decisions["newer"]["appliedToContact"] is True


def test_out_of_order_pages_and_two_daemons_agree_with_one_clean_run(serve_trimmed, db, settings, mongo):
    calls = [execution(call_id=f"c{n}", minutes_ago=10 * n + 5,
                       extracted=[{"appointment_booked": True}, {"user_interested": True}, {},
                                  {"name": f"Name {n}"}][n % 4]) for n in range(24)]
    bolna, first = serve_trimmed(calls, bolna_page_size=3)
    second = app_for(first.settings, mongo, bolna)
    for app in (first, second, first):
        app.run_job("crm_sync", full=True)
    [customer] = db[CUSTOMERS].find()
    assert customer["status"] == "Booked" and customer["callCount"] == 24
    newest_named = min((n for n in range(24) if n % 4 == 3))
    assert customer["name"] == f"Name {newest_named}"
    assert customer_call_ids(db) == {"+919876543210": {f"c{n}" for n in range(24)}}


def test_a_call_written_while_legacy_records_are_merged_is_not_undone(mongo, db):
    """Two spellings of one number are merged while another writer (a second daemon's page, a
    webhook) upserts a Booked call onto the record kept: the merge, folded from the records as
    read before, must not move the status (nor the newest call, nor the name) back."""
    early, late = datetime(2026, 5, 1), datetime(2026, 6, 1)
    kept = db[CUSTOMERS].insert_one({"phone": "+919876543210", "status": "Contacted", "statusAt": early,
                                     "statusCallId": "a", "lastCallAt": early, "lastCallId": "a", "name": "Ravi",
                                     "fieldsAt": {"name": early}, "callCount": 1}).inserted_id
    db[CUSTOMERS].insert_one({"phone": "09876543210", "status": "No Answer", "statusAt": early, "lastCallAt": early,
                              "lastCallId": "b", "callIds": ["b"]})
    docs = sorted(db[CUSTOMERS].find(), key=lambda doc: doc["_id"] != kept)
    ranks = StatusRanks()
    booked = CustomerCall("booked", late, "agent-1", "+919876543210", "Booked", {"name": "Ravi Kumar"}, {})
    racing = []

    def booked_call_lands_first(collection, method):
        if collection == CUSTOMERS and not racing:
            racing.append(db[CUSTOMERS].bulk_write([customer_upsert(
                normalize_phone("+919876543210"), [booked], late, ranks=ranks, call_count=2, existing_id=kept)]))

    merged = merge_records(HookedClient(mongo, booked_call_lands_first)[TEST_DB][CUSTOMERS], "+919876543210",
                           docs, ranks)
    [customer] = db[CUSTOMERS].find()
    assert racing
    assert (customer["status"], customer["statusCallId"], customer["lastCallId"], customer["name"]) == \
        ("Booked", "booked", "booked", "Ravi Kumar")
    assert customer["callCount"] == 2 and "callIds" not in customer
    assert merged["status"] == "Booked"


def status_changes(db) -> list[tuple]:
    return sorted(((a["from"], a["to"], a["callId"]) for a in db[ACTIVITIES].find({"type": "status_change"})),
                  key=lambda change: change[2])


def customer_writer(db, settings):
    return build_writers(db, settings).customers


def write(writer, *records) -> None:
    writer.write([parse_execution(record, "IN") for record in records], RunRecorder("crm_sync"), "agent-1")


def test_a_status_change_is_logged_only_as_the_write_made_it_when_two_writers_race(mongo, db, settings):
    """A poll's page (Interested) and a webhook's delivery (Booked) of one number at once: the
    webhook's upsert lands between the poll's read and its write, so the poll's call changes
    nothing. Only the change the database made is an activity."""
    raced = []

    def webhook_lands_first(collection, method):
        if (collection, method) == (CUSTOMERS, "bulk_write") and not raced:
            raced.append(True)
            write(customer_writer(db, settings), execution(call_id="booked", minutes_ago=20,
                                                           extracted={"appointment_booked": True}))

    poll = customer_writer(account_view(HookedClient(mongo, webhook_lands_first)[TEST_DB], None), settings)
    write(poll, execution(call_id="interested", minutes_ago=30, extracted={"user_interested": True}))
    assert raced and db[CUSTOMERS].find_one()["status"] == "Booked"
    assert status_changes(db) == [(None, "Booked", "booked")]
    [logged] = db[ACTIVITIES].find({"type": "status_change"})
    assert logged["reason"] == "first status" and logged["customerId"] == db[CUSTOMERS].find_one()["_id"]


def test_a_status_change_cut_off_by_a_crash_is_logged_once_by_the_retry_and_never_one_not_made(mongo, db, settings):
    interested = execution(call_id="interested", minutes_ago=30, extracted={"user_interested": True})
    booked = execution(call_id="booked", minutes_ago=20, extracted={"appointment_booked": True})
    # A first page's writes: its links, the customer's insert, the change's activity, the links
    # marked applied (nothing to take off the customer: `FIRST_STATUS_CHANGE`, logged while its
    # call's link is not applied). The process ends before each of them.
    for crash_before in range(4):
        trap = WriteTrap()
        crashing = customer_writer(account_view(HookedClient(mongo, trap)[TEST_DB], None), settings)
        trap.arm(crash_before, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            write(crashing, interested)
        # Before the retry, another writer's higher status: the cut-off page may have changed
        # the status already (logged then, by the retry), or not (never logged).
        write(customer_writer(db, settings), booked)
        write(customer_writer(db, settings), interested)  # the retry
        customer = db[CUSTOMERS].find_one()
        upserted = crash_before > 1
        made = [(None, "Interested", "interested"), ("Interested", "Booked", "booked")] if upserted else \
            [(None, "Booked", "booked")]
        assert status_changes(db) == sorted(made, key=lambda change: change[2]), f"crash at {trap.fired_at}"
        assert customer["status"] == "Booked" and not customer.get("pendingStatusChanges")
        for name in (CUSTOMERS, ACTIVITIES, CUSTOMER_CALLS):
            db[name].delete_many({})


def test_a_new_number_s_first_status_is_logged_with_no_write_to_take_it_off_the_customer(mongo, db, settings):
    """A first sync's common case: the insert's change is logged from the record's own
    `firstStatusChange`, so the page writes its links, the customer, the activity and the links
    applied, and no `$pull` (which cost a first sync of 5,000 calls 4,312 updates)."""
    written = []

    def count(collection, method):
        if method in WRITE_METHODS:
            written.append((collection, method))

    writer = customer_writer(account_view(HookedClient(mongo, count)[TEST_DB], None), settings)
    write(writer, execution(call_id="interested", minutes_ago=30, extracted={"user_interested": True}))
    assert status_changes(db) == [(None, "Interested", "interested")]
    assert written == [(CUSTOMER_CALLS, "bulk_write"), (CUSTOMERS, "bulk_write"), (ACTIVITIES, "bulk_write"),
                       (CUSTOMER_CALLS, "update_many")]
    write(customer_writer(db, settings), execution(call_id="interested", minutes_ago=30,
                                                   extracted={"user_interested": True}))
    assert status_changes(db) == [(None, "Interested", "interested")]


def test_a_first_status_cut_off_by_a_crash_is_logged_by_a_later_write_of_another_call(mongo, db, settings):
    """The cut-off page's call is not listed again (gone from Bolna): its link stays not applied,
    so the number's next write logs the insert's change, once however many writes follow."""
    trap = WriteTrap()
    crashing = customer_writer(account_view(HookedClient(mongo, trap)[TEST_DB], None), settings)
    trap.arm(2, KeyboardInterrupt)  # after the links and the customer's insert
    with pytest.raises(KeyboardInterrupt):
        write(crashing, execution(call_id="interested", minutes_ago=30, extracted={"user_interested": True}))
    assert status_changes(db) == []
    for call_id, minutes_ago in (("later", 20), ("latest", 10)):
        write(customer_writer(db, settings), execution(call_id=call_id, minutes_ago=minutes_ago,
                                                       extracted={"user_interested": True}))
    assert status_changes(db) == [(None, "Interested", "interested")]


def test_the_status_rule_on_the_server_agrees_with_python_on_every_pair(mongo):
    """`StatusRanks.wins_expression` (run by the server) and `StatusRanks.wins` (the writer's log,
    the legacy merge) decide alike for every stored status and time against every call's: known,
    equal-ranked, unknown, empty, not a string, missing."""
    ranks = StatusRanks()
    statuses = [status for group in ranks.groups for status in group] + ["Escalated", "", 7, None]
    times = [None, datetime(2026, 1, 1), datetime(2026, 1, 2)]
    stored = [{"_id": index, **({} if status is None else {"status": status}),
               **({} if at is None else {"statusAt": at})}
              for index, (status, at) in enumerate((s, t) for s in statuses for t in times)]
    collection = mongo[TEST_DB]["status_rule"]
    collection.insert_many(stored)
    for status in statuses:
        for at in times[1:]:
            on_server = {doc["_id"]: doc["wins"] for doc in collection.aggregate(
                [{"$project": {"wins": ranks.wins_expression(status, at)}}])}
            in_python = {doc["_id"]: ranks.wins(status, at, doc.get("status"), doc.get("statusAt")) for doc in stored}
            assert on_server == in_python, (status, at)


def test_a_legacy_field_is_replaced_by_a_newer_call_written_after_a_still_newer_one(mongo, db):
    """A legacy record's `name` (no `fieldsAt`: counted as set by its newest call, t1) must give
    way to a call at t2 naming another, even when a call at t3 > t2 naming nothing was written
    first (issue 23, found by the model test's long profile: the field's time followed
    `lastCallAt` to t3)."""
    t1, t2, t3 = datetime(2026, 5, 1), datetime(2026, 5, 2), datetime(2026, 5, 3)
    db[CUSTOMERS].insert_one({"phone": "09876543210", "callIds": ["a"], "callCount": 1, "status": "Contacted",
                              "statusAt": t1, "lastCallAt": t1, "lastCallId": "a", "name": "Old Name"})
    ranks, phone = StatusRanks(), normalize_phone("+919876543210")
    customers = HookedClient(mongo)[TEST_DB][CUSTOMERS]
    kept = merge_records(customers, phone.key, list(db[CUSTOMERS].find()), ranks)
    for call in (CustomerCall("c", t3, "agent-1", phone.key, "No Answer", {}, {}),
                 CustomerCall("b", t2, "agent-1", phone.key, "Contacted", {"name": "New Name"}, {})):
        customers.bulk_write([customer_upsert(phone, [call], t3, ranks=ranks, call_count=3, existing_id=kept["_id"])])
    [customer] = db[CUSTOMERS].find()
    assert (customer["phone"], customer["name"], customer["lastCallId"]) == (phone.key, "New Name", "c")


def held_back_entries(db) -> list[tuple]:
    return sorted((a["callId"], a["fields"]) for a in db[ACTIVITIES].find({"type": "held_back"}))


BOOKED_RAVI = {"appointment_booked": True, "name": "Ravi"}


def test_a_lock_set_between_the_read_and_the_write_is_logged_as_held_back_once(mongo, db, settings):
    """A person locks the status while a page is written: after the writer read the customer,
    before its upsert. The upsert holds the status (the lock wins); what it held is an activity,
    and taking the page again (a re-run, a crash) logs nothing more."""
    db[CUSTOMERS].insert_one({"phone": "+919876543210", "status": "Contacted", "name": "Ravi Kumar"})
    edits = []

    def person_locks_first(collection, method):
        if (collection, method) == (CUSTOMERS, "bulk_write") and not edits:
            edits.append(mongo[TEST_DB][CUSTOMERS].update_one({}, {"$addToSet": {"locked": "status"}}))

    page = execution(call_id="booked", minutes_ago=20, extracted=BOOKED_RAVI)
    write(customer_writer(account_view(HookedClient(mongo, person_locks_first)[TEST_DB], None), settings), page)
    customer = db[CUSTOMERS].find_one()
    assert edits and (customer["status"], customer["name"]) == ("Contacted", "Ravi")
    assert customer["suggested"]["status"]["value"] == "Booked"
    assert held_back_entries(db) == [("booked", {"status": "Booked"})]
    write(customer_writer(db, settings), page)  # the page taken again
    assert held_back_entries(db) == [("booked", {"status": "Booked"})]
    assert not db[CUSTOMERS].find_one().get("pendingHeldBack") and status_changes(db) == []


def test_a_lock_removed_between_the_read_and_the_write_logs_no_held_back(mongo, db, settings):
    """The reverse: the person unlocks the status after the read; the upsert applies the call's
    status, and no activity says a lock held it."""
    db[CUSTOMERS].insert_one({"phone": "+919876543210", "status": "Contacted", "statusAt": datetime(2020, 1, 1),
                              "locked": ["status"]})
    edits = []

    def person_unlocks_first(collection, method):
        if (collection, method) == (CUSTOMERS, "bulk_write") and not edits:
            edits.append(mongo[TEST_DB][CUSTOMERS].update_one({}, {"$pull": {"locked": "status"}}))

    page = execution(call_id="booked", minutes_ago=20, extracted=BOOKED_RAVI)
    write(customer_writer(account_view(HookedClient(mongo, person_unlocks_first)[TEST_DB], None), settings), page)
    customer = db[CUSTOMERS].find_one()
    assert edits and customer["status"] == "Booked" and "suggested" not in customer
    assert held_back_entries(db) == []
    assert status_changes(db) == [("Contacted", "Booked", "booked")]


def test_a_held_back_value_cut_off_by_a_crash_is_logged_once_by_the_retry(mongo, db, settings):
    page = execution(call_id="booked", minutes_ago=20, extracted=BOOKED_RAVI)
    # The process ends before each of the page's writes in turn, then the page is taken again.
    crashed_at = []
    while not crashed_at or crashed_at[-1] is not None:
        db[CUSTOMERS].insert_one({"phone": "+919876543210", "status": "Contacted", "name": "Ravi Kumar",
                                  "locked": ["status", "name"]})
        trap = WriteTrap()
        crashing = customer_writer(account_view(HookedClient(mongo, trap)[TEST_DB], None), settings)
        trap.arm(len(crashed_at), KeyboardInterrupt)
        try:
            write(crashing, page)
        except KeyboardInterrupt:
            pass
        crashed_at.append(trap.fired_at)  # None: the page was written whole
        write(customer_writer(db, settings), page)  # the retry
        customer = db[CUSTOMERS].find_one()
        assert held_back_entries(db) == [("booked", {"name": "Ravi", "status": "Booked"})], f"crash at {trap.fired_at}"
        assert (customer["status"], customer["name"]) == ("Contacted", "Ravi Kumar")
        assert not customer.get("pendingHeldBack")
        for name in (CUSTOMERS, ACTIVITIES, CUSTOMER_CALLS):
            db[name].delete_many({})
    assert "customers.bulk_write" in crashed_at and crashed_at.index("customers.bulk_write") < len(crashed_at) - 2
