"""`forget` finds a number wherever the daemon stored it (issue 25): on either side of a call, not
only as its customer (a call without `call_type` is taken as outbound, so its caller is only in
`fromNumber`), and in the raw body of a webhook delivery still waiting in `webhook_inbox`; found
through the normalization the sync uses, and kept out of later writes. Never on the agent's own line:
the number on every call of the agent is refused, or erased only where it is a customer's."""
import pytest

from services.database import CALLS, CUSTOMERS, ERASURES, SUPPRESSIONS, WEBHOOK_INBOX
from services.privacy import AgentLineError, Eraser, PhoneHasher, forget
from services.webhooks import WAITING
from tests.helpers import build_app, execution
from tests.test_privacy import (_COLLECTIONS, KEY, OTHERS, PERSON, assert_person_gone, dump, person_and_others,
                                serve, sync)  # noqa: F401 - fixture
from utils.phone import normalize_phone
from tests.test_webhooks import TOKEN, bolna, deliver, hook_settings, started  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


def a_call_without_call_type_from_the_person(call_id: str = "x-1") -> dict:
    """Bolna sent no `call_type`: the call is taken as outbound, its customer is `to_number` (someone
    else) and the person, who called, is only in `from_number`, spelled nationally."""
    record = execution(OTHERS[0], call_id=call_id)
    record["telephony_data"] = {**record["telephony_data"], "from_number": "098765 43210"}
    del record["telephony_data"]["call_type"]
    return record


def test_a_number_only_in_from_number_is_found_and_erased(serve, db):
    bolna, app = serve([a_call_without_call_type_from_the_person(), execution(OTHERS[1], call_id="o-1")])
    sync(app)
    assert db[CALLS].find_one({"callId": "x-1"})["fromNumber"] == PERSON.key
    assert Eraser(db).find(PERSON).counts()["calls"] == 1

    removed = forget(db, PERSON, PhoneHasher(KEY))

    assert removed["calls"] == 1
    call = db[CALLS].find_one({"callId": "x-1"})
    assert call["erasedAt"] and "fromNumber" not in call and "fromNumberRaw" not in call
    assert db[CALLS].find_one({"callId": "o-1"}).get("erasedAt") is None
    assert_person_gone(db)


def test_a_resync_does_not_bring_back_a_number_only_in_from_number(serve, db):
    bolna, app = serve([a_call_without_call_type_from_the_person()])
    sync(app)
    forget(db, PERSON, PhoneHasher(KEY))
    bolna.update_execution("x-1", total_cost=7.0)
    bolna.add_execution(a_call_without_call_type_from_the_person("x-2"))
    runs = sync(app, full=True)
    assert runs["call_processor"]["counts"]["suppressed"] >= 1
    assert db[CALLS].find_one({"callId": "x-2"}) is None
    assert_person_gone(db)


def test_a_waiting_webhook_delivery_holding_the_number_is_deleted(hook_settings, mongo, bolna, started):
    app = build_app(hook_settings.with_overrides(privacy_hash_key=KEY), mongo, bolna)
    base = started(app, processor=False)  # deliveries wait: no processor runs
    for record in (execution("+91 98765-43210", call_id="w-1"), a_call_without_call_type_from_the_person("w-2"),
                   execution(OTHERS[1], call_id="w-3")):
        assert deliver(base, record).status_code == 200
    db = app.db
    assert Eraser(db).find(PERSON).counts()["webhookInbox"] == 2

    removed = forget(db, PERSON, PhoneHasher(KEY))

    assert removed["webhookInbox"] == 2
    assert [entry["callId"] for entry in db[WEBHOOK_INBOX].find({"state": WAITING})] == ["w-3"]
    assert_person_gone(db)


# The agent's own line, on every call of tests.helpers.execution: the caller of an outbound call,
# the number called on an inbound one. It is the business's number, never a customer's.
AGENT_LINE = normalize_phone("+918045671234", "IN")
ANOTHER_LINE = "+918000000001"


def a_call_to_the_agent_line_as_customer(call_id: str, minutes_ago: int = 30) -> dict:
    """Another of the business's lines calls the agent's line: here it is the customer."""
    record = execution(AGENT_LINE.key, minutes_ago=minutes_ago, call_id=call_id)
    record["telephony_data"] = {**record["telephony_data"], "from_number": ANOTHER_LINE}
    return record


def a_call_without_call_type_from_the_agent_line(call_id: str, minutes_ago: int = 30) -> dict:
    record = execution(OTHERS[0], minutes_ago=minutes_ago, call_id=call_id)
    del record["telephony_data"]["call_type"]
    return record


def test_forgetting_only_an_agents_own_line_erases_nothing_and_says_so(serve, db):
    bolna, app = serve(person_and_others() + [a_call_without_call_type_from_the_agent_line("d-1")])
    sync(app)
    before = dump(db, _COLLECTIONS + (SUPPRESSIONS, ERASURES))

    for spelling in ("+918045671234", "08045671234"):
        with pytest.raises(AgentLineError, match="agent's own line") as refused:
            Eraser(db).find_person(normalize_phone(spelling, "IN"))  # the dry run's lookup
        assert "8045671234" not in str(refused.value)
        with pytest.raises(AgentLineError):
            forget(db, normalize_phone(spelling, "IN"), PhoneHasher(KEY))

    assert dump(db, _COLLECTIONS + (SUPPRESSIONS, ERASURES)) == before
    assert db[CALLS].count_documents({"erasedAt": {"$exists": True}}) == 0


def test_a_number_both_customer_and_agent_line_is_erased_only_where_it_is_the_customer(serve, db):
    bolna, app = serve(person_and_others() + [a_call_to_the_agent_line_as_customer("l-1"),
                                              a_call_without_call_type_from_the_agent_line("d-1")])
    sync(app)
    agents_calls = {c["callId"]: c for c in db[CALLS].find({"callId": {"$ne": "l-1"}})}
    assert len(agents_calls) == 8 and all(AGENT_LINE.key in (c["fromNumber"], c["toNumber"])
                                          for c in agents_calls.values())
    others_before = {c["phone"]: c for c in db[CUSTOMERS].find({"phone": {"$ne": AGENT_LINE.key}})}
    counts = Eraser(db).find(AGENT_LINE).counts()

    removed = forget(db, AGENT_LINE, PhoneHasher(KEY))

    assert removed == counts and removed["calls"] == 1 and removed["customers"] == 1
    assert db[CALLS].find_one({"callId": "l-1"})["erasedAt"]
    assert {c["callId"]: c for c in db[CALLS].find({"callId": {"$ne": "l-1"}})} == agents_calls
    assert {c["phone"]: c for c in db[CUSTOMERS].find()} == others_before
    # Later syncs leave out the line as a customer only: the agent's calls from it are written as ever,
    # one without `call_type` too (the line known from the stored calls, then from its page).
    bolna.add_execution(a_call_to_the_agent_line_as_customer("l-2", minutes_ago=6))
    bolna.add_execution(a_call_without_call_type_from_the_agent_line("d-2", minutes_ago=6))
    runs = sync(app)
    assert runs["crm_sync"]["counts"]["suppressed"] == 1 and runs["call_processor"]["counts"]["suppressed"] == 1
    assert db[CALLS].find_one({"callId": "l-2"}) is None
    assert db[CALLS].find_one({"callId": "d-2"})["fromNumber"] == AGENT_LINE.key
    for side, direction in (("fromNumber", "outbound"), ("toNumber", "inbound")):  # the stored calls forgotten
        db[CALLS].delete_many({side: AGENT_LINE.key, "direction": direction})
    bolna.add_execution(execution(OTHERS[0], minutes_ago=5, call_id="o-9"))
    bolna.add_execution(a_call_without_call_type_from_the_agent_line("d-3", minutes_ago=5))
    sync(app)
    assert db[CALLS].find_one({"callId": "o-9"})["fromNumber"] == AGENT_LINE.key
    assert db[CALLS].find_one({"callId": "d-3"})["fromNumber"] == AGENT_LINE.key
    assert db[CUSTOMERS].find_one({"phone": OTHERS[0]})["callCount"] == others_before[OTHERS[0]]["callCount"] + 3


def test_a_waiting_delivery_of_the_agent_line_is_kept_when_the_line_is_forgotten_as_a_customer(
        hook_settings, mongo, bolna, started):
    app = build_app(hook_settings.with_overrides(privacy_hash_key=KEY), mongo, bolna)
    base = started(app, processor=False)
    for record in (a_call_to_the_agent_line_as_customer("w-1"), execution(OTHERS[1], call_id="w-2"),
                   execution(OTHERS[0], call_id="w-3", direction="inbound")):
        assert deliver(base, record).status_code == 200

    removed = forget(app.db, AGENT_LINE, PhoneHasher(KEY))

    assert removed["webhookInbox"] == 1
    assert sorted(entry["callId"] for entry in app.db[WEBHOOK_INBOX].find({"state": WAITING})) == ["w-2", "w-3"]
