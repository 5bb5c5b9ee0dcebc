"""A customer new when read and every call are first written by a plain insert (`customer_insert`,
`new_call`), built in Python, in place of the pipeline upsert (`customer_upsert`, `call_upsert`),
which the server must evaluate expression by expression: both must make the same document, on
mongomock and on the wire server (tests/test_mongodb_integration_customer_races.py runs these
tests again there); the upsert takes over where the document is stored already."""
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakes.mongo_hooks import HookedClient
from models.call import call_upsert, new_call
from models.customer import (FIRST_STATUS_CHANGE, PENDING_STATUS_CHANGES, PROFILE_FIELDS, CustomerCall, StatusRanks,
                             customer_insert, customer_upsert)
from models.execution import parse_execution
from services.writers import bulk_upsert
from tests.conftest import TEST_DB
from utils.config import DEFAULT_PRECEDENCE
from tests.helpers import execution
from utils.phone import normalize_phone

pytestmark = pytest.mark.timeout(60)
RANKS = StatusRanks()
PHONE = normalize_phone("+91 98765 43210", "IN")
NOW = datetime(2026, 12, 1, 12, 0)
STATUSES = [status for group in DEFAULT_PRECEDENCE for status in group] + ["Unranked"]

calls = st.lists(st.builds(
    CustomerCall,
    call_id=st.sampled_from(["c1", "c2", "c3", "c4"]),
    at=st.integers(0, 5).map(lambda minutes: NOW - timedelta(minutes=minutes)),
    agent_id=st.sampled_from([None, "agent-1"]),
    phone_raw=st.sampled_from(["", "+91 98765 43210"]),
    status=st.sampled_from(STATUSES),
    profile=st.dictionaries(st.sampled_from(list(PROFILE_FIELDS)), st.sampled_from(["a", "b", "$name"]), max_size=3),
    extracted=st.dictionaries(st.sampled_from(["budget", "city"]), st.sampled_from(["1", "x"]), max_size=2),
), min_size=1, max_size=4)


def check_same_record(db, page: list[CustomerCall], call_count: int) -> None:
    """The upsert on an empty collection and the insert: the same document, `_id` aside, and the
    same change to log, which the upsert records as pending and the insert as its first."""
    db.upserted.drop()
    db.inserted.drop()
    db.upserted.bulk_write([customer_upsert(PHONE, page, NOW, ranks=RANKS, call_count=call_count)])
    db.inserted.bulk_write([customer_insert(PHONE, page, NOW, ranks=RANKS, call_count=call_count)])
    inserted, upserted = db.inserted.find_one({}, {"_id": 0}), db.upserted.find_one({}, {"_id": 0})
    assert [inserted.pop(FIRST_STATUS_CHANGE)] == upserted.pop(PENDING_STATUS_CHANGES)
    assert inserted == upserted


# The `mongo` fixture is one client for all examples; each example starts from empty collections.
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=calls, call_count=st.integers(0, 3))
def test_the_insert_makes_the_record_the_upsert_makes(mongo, page, call_count):
    check_same_record(HookedClient(mongo)[TEST_DB], page, call_count)


def test_a_number_written_since_the_read_gets_the_upsert_instead(mongo):
    """Two writers saw the number new: the second insert hits the unique phone and its upsert runs,
    so its calls are weighed against the record (a higher status wins) instead of being lost."""
    collection = HookedClient(mongo)[TEST_DB]["customers"]
    collection.create_index("phone", unique=True)
    first = [CustomerCall("c1", NOW - timedelta(minutes=5), None, "", "Contacted", {"name": "Asha"}, {})]
    second = [CustomerCall("c2", NOW, None, "", "Booked", {}, {})]
    collection.bulk_write([customer_insert(PHONE, first, NOW, ranks=RANKS, call_count=1)])
    upsert = customer_upsert(PHONE, second, NOW, ranks=RANKS, call_count=2)
    assert bulk_upsert(collection, [customer_insert(PHONE, second, NOW, ranks=RANKS, call_count=2)],
                       retry_as=[upsert]) == (0, 1)
    [record] = collection.find()
    assert (record["status"], record["name"], record["callCount"], record["lastCallId"]) == ("Booked", "Asha", 2, "c2")


def _record(status: str, transcript: str, with_updated_at: bool) -> dict:
    record = execution("+91 98765 43210", call_id="c1", status=status, transcript=transcript)
    if not with_updated_at:
        del record["updated_at"]  # as in the trimmed listing
    return record


executions = st.tuples(st.builds(_record, st.sampled_from(["queued", "in-progress", "completed", "no-answer"]),
                                 st.sampled_from(["", "user: hello", "$transcript"]), st.booleans()),
                       st.booleans())


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_and_keep=executions)
def test_the_call_insert_makes_the_document_the_upsert_makes(mongo, record_and_keep):
    record, keep = record_and_keep
    db = HookedClient(mongo)[TEST_DB]
    db.upserted.drop()
    db.inserted.drop()
    call = parse_execution(record, "IN")
    db.upserted.bulk_write([call_upsert(call, NOW, with_transcript=keep)])
    db.inserted.insert_one(new_call(call, NOW, with_transcript=keep))
    assert db.inserted.find_one({}, {"_id": 0}) == db.upserted.find_one({}, {"_id": 0})
