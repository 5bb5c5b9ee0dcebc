from datetime import datetime

import pytest

from models.call import call_fields
from models.customer import customer_call
from models.execution import MalformedExecution, parse_execution, parse_time
from models.execution import read_extraction


def execution(**overrides):
    record = {
        "id": "c-1", "agent_id": "a-1", "status": "completed", "conversation_duration": 42.5,
        "total_cost": 3.2, "created_at": "2026-11-20T10:15:02.123Z", "updated_at": "2026-11-20T10:18:00Z",
        "transcript": "assistant: Hello\nuser: I want to book a visit\n",
        "extracted_data": {"name": "Ravi", "appointment_booked": True, "budget": "1 crore"},
        "telephony_data": {"to_number": "+91 98765 43210", "from_number": "+918045671234",
                           "call_type": "outbound", "duration": "43", "recording_url": "https://r/1.mp3"},
    }
    record.update(overrides)
    return record


def test_full_record_is_read():
    e = parse_execution(execution())
    assert (e.id, e.agent_id, e.status, e.terminal, e.connected) == ("c-1", "a-1", "completed", True, True)
    assert e.created_at == datetime(2026, 11, 20, 10, 15, 2, 123000)
    assert e.customer_number == "+91 98765 43210"
    assert e.extracted == {"name": "Ravi", "appointment_booked": True, "budget": "1 crore"}


def test_inbound_customer_is_the_caller():
    e = parse_execution(execution(telephony_data={"to_number": "+918045671234", "from_number": "9876543210",
                                                  "call_type": "inbound"}))
    assert e.customer_number == "9876543210"


@pytest.mark.parametrize("direction,numbers", [
    ("outbound", {"to_number": "", "from_number": "+918000000001"}),
    ("outbound", {"from_number": "+918000000001"}),
    ("inbound", {"from_number": None, "to_number": "+918000000001"}),
])
def test_the_agents_own_line_is_never_the_customer(direction, numbers):
    e = parse_execution(execution(telephony_data={**numbers, "call_type": direction}))
    assert e.customer_phone is None and e.customer_phone_missing == "missing"


@pytest.mark.parametrize("withheld", ["anonymous", "Restricted", "Unknown", "private", "null", "  "])
def test_a_withheld_number_is_no_customer_and_says_why(withheld):
    e = parse_execution(execution(telephony_data={"from_number": withheld, "to_number": "+918000000001",
                                                  "call_type": "inbound"}))
    assert e.customer_phone is None
    assert e.customer_phone_missing == ("missing" if not withheld.strip() else "withheld")
    assert call_fields(e)["customerPhoneMissing"] == e.customer_phone_missing


def test_numbers_are_kept_exactly_as_received_and_not_cleaned_into_another():
    e = parse_execution(execution(telephony_data={"to_number": "98765\x0043210", "call_type": "outbound"}))
    assert e.customer_number == "98765\x0043210"
    assert not e.customer_phone.valid and e.customer_phone.key == "98765\x0043210"


def test_integer_id_is_an_opaque_string_and_duration_falls_back():
    e = parse_execution(execution(id=12345, conversation_duration=None, conversation_time="17"))
    assert e.id == "12345" and e.duration == 17.0


@pytest.mark.parametrize("payload,code", [
    ([1, 2], "not_an_object"), ("x", "not_an_object"), ({"status": "completed"}, "missing_id"),
    ({"id": {"x": 1}}, "missing_id"), ({"id": "c-2", "created_at": "yesterday"}, "missing_created_at"),
])
def test_unusable_records_raise_with_a_code(payload, code):
    with pytest.raises(MalformedExecution) as raised:
        parse_execution(payload)
    assert raised.value.code == code


@pytest.mark.parametrize("raw,expected,error", [
    ('{"name": "Asha"}', {"name": "Asha"}, None),
    ("{name: Ravi, budget", None, "not valid JSON"),
    ([1, 2], None, "is a list"),
    (None, None, None),
])
def test_extracted_data_as_string_list_or_null(raw, expected, error):
    e = parse_execution(execution(extracted_data=raw))
    assert e.extracted == expected
    assert (e.extracted_error is None) if error is None else (error in e.extracted_error)


def test_missing_extracted_data():
    record = execution()
    del record["extracted_data"]
    assert parse_execution(record).extracted is None


def test_dispositions_are_values_with_their_confidence_under_their_path():
    nested = {"lead_info": {"budget": {"subjective": "around 50 lakhs", "objective": 5000000,
                                       "confidence": 0.8, "confidence_label": "high"},
                            "name": {"subjective": "Asha", "objective": None, "confidence_label": "low"}}}
    extraction = read_extraction(nested)
    assert extraction.values == {"lead_info": {"budget": 5000000, "name": "Asha"}}
    assert extraction.confidence == {"lead_info": {"budget": 0.8, "name": "low"}}
    assert extraction.find("budget") == (("lead_info", "budget"), 5000000)  # a disposition by its name
    assert extraction.find("lead_info_name") == (("lead_info", "name"), "Asha")


def test_nested_objects_keep_their_paths_and_never_collide():
    extraction = read_extraction({"customer": {"name": "Ravi"}, "agent": {"name": "Priya"},
                                  "address": {"line1": "12 MG Road", "city": "Pune"}})
    assert extraction.values["address"] == {"line1": "12 MG Road", "city": "Pune"}
    assert extraction.find("customer_name")[1] == "Ravi" and extraction.find("agent_name")[1] == "Priya"
    assert extraction.find("name") is None  # two parents: neither is "the" name
    assert extraction.find("address")[1] == {"line1": "12 MG Road", "city": "Pune"}


def test_keys_that_become_equal_when_made_safe_keep_both_values():
    extraction = read_extraction({"a.b": 1, "a_b": 2})
    assert extraction.values == {"a_b": 1, "a_b_2": 2}


def test_unsafe_keys_and_deep_nesting_are_made_storable():
    deep = current = {}
    for _ in range(50):
        current["k"] = {}
        current = current["k"]
    values = read_extraction({"$where": 1, "a.b": 2, "deep": deep}).values
    assert values["_where"] == 1 and values["a_b"] == 2
    bson_depth = 0
    node = values["deep"]
    while isinstance(node, dict):
        node, bson_depth = node["k"], bson_depth + 1
    assert bson_depth <= 7 and isinstance(node, str)  # cut off, kept as text


def test_parse_time_variants():
    assert parse_time("2026-11-20T10:15:02Z") == datetime(2026, 11, 20, 10, 15, 2)
    assert parse_time("2026-11-20T15:45:02+05:30") == datetime(2026, 11, 20, 10, 15, 2)
    assert parse_time("2026-11-20T10:15:02.123456") == datetime(2026, 11, 20, 10, 15, 2, 123000)
    assert parse_time("garbage") is None and parse_time(None) is None


@pytest.mark.parametrize("overrides,status", [
    ({}, "Booked"),
    ({"extracted_data": {"user_interested": True}}, "Interested"),
    ({"extracted_data": {"user_interested": "no"}}, "Not Interested"),
    ({"extracted_data": {"callback_user": True}}, "Callback"),
    ({"extracted_data": {}}, "Contacted"),
    ({"status": "no-answer", "conversation_duration": 0}, "No Answer"),
    ({"conversation_duration": 0}, "No Answer"),
    ({"answered_by_voice_mail": True}, "Voicemail"),
    ({"telephony_data": {"to_number": "+919876543210", "hangup_reason": "Voicemail detected"}}, "Voicemail"),
    ({"status": "busy", "answered_by_voice_mail": True}, "No Answer"),
])
def test_customer_status_from_outcome(overrides, status):
    e = parse_execution(execution(**overrides))
    assert customer_call(e).status == status


def test_customer_profile_and_unknown_keys():
    e = parse_execution(execution(extracted_data={"customer_name": "Asha", "email": "a@x.in",
                                                  "budget": "50L", "user_interested": True}))
    call = customer_call(e)
    assert call.profile == {"name": "Asha", "email": "a@x.in"}
    assert call.extracted == {"budget": "50L"}


def test_call_fields_normalize_both_numbers_and_keep_raw():
    fields = call_fields(parse_execution(execution(), "IN"))
    assert fields["customerPhone"] == "+919876543210" and fields["customerPhoneValid"]
    assert fields["toNumberRaw"] == "+91 98765 43210" and fields["toNumber"] == "+919876543210"
    assert fields["durationSeconds"] == 42.5 and fields["terminal"] is True
    assert "processed" not in fields  # the sync never touches the analysis state
