"""`forget` finds a number wherever the daemon stored it (issue 25): on either side of a call, not
only as its customer (a call without `call_type` is taken as outbound, so its caller is only in
`fromNumber`), and in the raw body of a webhook delivery still waiting in `webhook_inbox`; found
through the normalization the sync uses, and kept out of later writes."""
import pytest

from services.database import CALLS, WEBHOOK_INBOX
from services.privacy import Eraser, PhoneHasher, forget
from services.webhooks import WAITING
from tests.helpers import build_app, execution
from tests.test_privacy import KEY, OTHERS, PERSON, assert_person_gone, serve, sync  # noqa: F401 - fixture
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
