"""Properties over generated inputs: phone normalization, and execution -> document mapping on any
JSON the API could send."""
import json
from datetime import datetime, timedelta

import bson
import phonenumbers
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from models.call import call_fields
from models.customer import customer_call
from models.execution import MalformedExecution, parse_execution
from utils.clock import utcnow
from utils.phone import normalize_phone

REGIONS = ("IN", "US", "GB", "AE")

# -- phone numbers ------------------------------------------------------------------------------

phone_like_text = st.text(alphabet="0123456789+-() .x", max_size=30)
indian_mobile = st.from_regex(r"[6-9][0-9]{9}", fullmatch=True)
us_number = st.from_regex(r"[2-9][0-8][0-9][2-9][0-9]{6}", fullmatch=True)


@st.composite
def spelled_numbers(draw) -> str:
    """Digits that are often a real number, with a country prefix or none and any separators."""
    prefix = draw(st.sampled_from(["", "+", "0", "00", "91", "+91", "+1", "+44", "+971"]))
    digits = draw(indian_mobile | us_number | st.from_regex(r"[0-9]{4,15}", fullmatch=True))
    separators = draw(st.lists(st.sampled_from(["", "", " ", "-", ".", "(", ")"]),
                               min_size=len(digits), max_size=len(digits)))
    return prefix + "".join(sep + digit for sep, digit in zip(separators, digits))


@given(spelled_numbers() | phone_like_text, st.sampled_from(REGIONS))
def test_normalizing_the_e164_form_gives_itself(text, region):
    phone = normalize_phone(text, region)
    if phone is None or not phone.valid:
        return  # nothing to be idempotent about: invalid numbers are kept as given
    again = normalize_phone(phone.e164, region)
    assert again.e164 == phone.e164
    # Whatever region a reader assumes, a number with its country code is the same number.
    assert all(normalize_phone(phone.e164, other).e164 == phone.e164 for other in REGIONS)


@given(indian_mobile)
def test_every_spelling_of_an_indian_mobile_is_one_number(digits):
    expected = "+91" + digits
    assume(phonenumbers.is_valid_number(phonenumbers.parse(expected)))
    spellings = [expected, f"+91 {digits[:5]} {digits[5:]}", f"+91-{digits}", f"0{digits}", f"91{digits}",
                 digits, f"(+91) {digits[:3]} {digits[3:6]} {digits[6:]}", f" 0091 {digits} "]
    assert {normalize_phone(spelling, "IN").e164 for spelling in spellings} == {expected}


@given(us_number, st.sampled_from(REGIONS))
def test_every_international_spelling_of_a_us_number_is_one_number(digits, region):
    expected = "+1" + digits
    assume(phonenumbers.is_valid_number(phonenumbers.parse(expected)))
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    spellings = [expected, f"+1 ({area}) {exchange}-{line}", f"+1-{area}-{exchange}-{line}",
                 f"+1 {area}.{exchange}.{line}"]
    assert {normalize_phone(spelling, region).e164 for spelling in spellings} == {expected}


@given(us_number)
def test_a_national_spelling_reads_in_the_default_region(digits):
    expected = "+1" + digits
    assume(phonenumbers.is_valid_number(phonenumbers.parse(expected)))
    assert normalize_phone(f"({digits[:3]}) {digits[3:6]}-{digits[6:]}", "US").e164 == expected


# -- execution -> documents -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Up to now: a time further ahead than FUTURE_TOLERANCE is refused (tests/test_hostile_dates.py).
timestamps = st.datetimes(min_value=datetime(2020, 1, 1), max_value=utcnow()).map(
    lambda moment: moment.isoformat() + "Z")
FIELDS = ("status", "conversation_duration", "conversation_time", "total_cost", "updated_at", "batch_id",
          "transcript", "summary", "extracted_data", "answered_by_voice_mail", "telephony_data")
# Records shaped like executions, each known field holding any JSON (or a plausible value), so
# generated inputs get past the id and timestamp checks into the rest of the mapping.
execution_like = st.fixed_dictionaries(
    {"id": st.text(min_size=1) | json_values, "created_at": timestamps | json_values},
    optional={name: json_values for name in FIELDS} | {
        "telephony_data": st.fixed_dictionaries({}, optional={
            name: json_values | phone_like_text
            for name in ("to_number", "from_number", "call_type", "duration", "recording_url")}),
        "extracted_data": json_values | json_values.map(json.dumps) | st.text(),
    },
)
# Round-tripped through JSON text, as the client receives it (lone surrogates included: JSON's
# "\ud800" escape is legal and decodes to one).
api_json = (json_values | execution_like).map(lambda value: json.loads(json.dumps(value)))

mapping_settings = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def _map(payload):
    """Every document built from one execution, or MalformedExecution."""
    execution = parse_execution(payload)
    return execution, call_fields(execution), customer_call(execution)


@mapping_settings
@given(api_json)
def test_mapping_raises_nothing_but_malformed_execution_and_keeps_the_call_id(payload):
    try:
        execution, call, customer = _map(payload)
    except MalformedExecution as exc:
        assert exc.code  # every refusal says why, for the run record
        return
    assert call["callId"] == customer.call_id == execution.id
    assert execution.id == str(payload.get("id") or payload.get("execution_id")).strip()[:200]


@mapping_settings
@given(execution_like)
def test_a_mapped_call_can_always_be_stored(payload):
    """What the mapping accepts, MongoDB must accept too: one unstorable record would fail the
    bulk write of its whole page."""
    try:
        execution, call, customer = _map(json.loads(json.dumps(payload)))
    except MalformedExecution:
        return
    bson.encode(call)
    bson.encode({"profile": customer.profile, "extracted": customer.extracted, "status": customer.status})


storable_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=50)


@given(storable_text.filter(str.strip), timestamps, json_values)
def test_an_identified_dated_execution_is_never_refused(call_id, created_at, extracted):
    execution, call, _ = _map({"id": call_id, "created_at": created_at, "extracted_data": extracted})
    assert call["callId"] == call_id.strip()
    assert abs(execution.created_at - datetime.fromisoformat(created_at[:-1])) < timedelta(milliseconds=1)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_extracted_data_walked_once_is_stored_as_plain_makes_it(data):
    from models.execution import plain, read_extraction
    assert read_extraction(data).stored == plain(data)


def test_extracted_data_nested_past_the_depth_limit_is_stored_as_plain_makes_it():
    from models.execution import MAX_DEPTH, plain, read_extraction
    data: dict = {"leaf": [1, {"x": 2}]}
    for level in range(MAX_DEPTH + 2):
        data = {f"level{level}": data, "d": {"objective": "yes", "confidence": 0.5}, "l": [data]}
        assert read_extraction(data).stored == plain(data)
