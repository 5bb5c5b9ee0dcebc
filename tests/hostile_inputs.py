"""Hypothesis strategies for what an attacker or a broken upstream can send (issue 25): webhook
bodies, execution pages and `extracted_data` holding any JSON, wrong types, huge strings, deep
nesting, odd Unicode, out-of-range numbers and dates. Used by tests/test_fuzz_hostile.py.

`examples(n)`: n examples in the normal run; with CALLSYNC_HYPOTHESIS_PROFILE=long (the long
profile of tests/conftest.py) the profile's count instead."""
from __future__ import annotations

import json
import os
from datetime import timedelta

from hypothesis import HealthCheck, settings, strategies as st

from fakes.dataset import iso
from models.execution import TERMINAL_STATUSES
from utils.clock import utcnow

PROFILE_ENV = "CALLSYNC_HYPOTHESIS_PROFILE"
LONG_PROFILE = "long"


def examples(normal: int) -> settings:
    long_run = os.environ.get(PROFILE_ENV) == LONG_PROFILE
    return settings(max_examples=settings.default.max_examples if long_run else normal,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# Characters that have broken parsers, databases and terminals: NUL and controls, lone surrogates
# (legal as JSON escapes), a byte-order mark, right-to-left override, digits of other scripts,
# combining marks, non-characters, MongoDB's operator and path characters.
ODD_CHARACTERS = ["\x00", "\x1b", "\x7f", "\ud800", "\udfff", "\ufeff", "\u202e", "\u0663", "\u00b2", "\u0301",
                  "\uffff", "\U0001F600", "\u2028", "$", ".", "\\", '"', "@", "+", "-", " ", "\n"]
odd_text = st.text(st.characters() | st.sampled_from(ODD_CHARACTERS), max_size=24)
# A megabyte each: long runs of one class with and without separators, and what a regex would
# scan (numbers, addresses, words). Built once: Hypothesis picks among them.
HUGE_TEXTS = ["a" * 1_000_000, "1 " * 500_000, "1-" * 500_000, "a@" * 500_000, "a." * 500_000,
              "user: " + "9" * 999_994, "\ud800" * 100_000, "assistant: hi\n" * 70_000]
huge_text = st.sampled_from(HUGE_TEXTS)
# Numbers JSON can carry that a program may not: past 64 bits, past a float, NaN and infinities
# (Python's json reads `NaN` and `Infinity`), negative zero, the smallest subnormal.
numbers = (st.integers() | st.sampled_from([10**30, -(2**63) - 1, 2**64, 10**400])
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 5e-324, -0.0]))
# Dates: out of range in UTC, far ahead, impossible, not dates, and ordinary ones of the last weeks.
BAD_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59Z",
             "2099-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "0000-00-00", "+275760-09-13T00:00:00Z",
             "-000001-01-01T00:00:00Z", "2026-06-07T25:61:61Z", "\u0661\u0669\u0667\u0660-01-01", "", " ",
             "2026-06-07T10:00:00+99:00", "1970-01-01T00:00:00Z", "1900-01-01"]
recent_dates = st.integers(0, 30 * 24 * 3600).map(lambda seconds: iso(utcnow() - timedelta(seconds=seconds)))
dates = recent_dates | st.sampled_from(BAD_DATES) | numbers | odd_text


def any_json(leaves=None, max_leaves: int = 12):
    leaves = leaves if leaves is not None else st.none() | st.booleans() | numbers | odd_text
    return st.recursive(leaves, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(odd_text, children, max_size=4), max_leaves=max_leaves)


json_values = any_json()


def nested(depth: int, leaf: object = "Ravi") -> object:
    value = leaf
    for level in range(depth):
        value = {f"level{level}": value} if level % 2 else [value]
    return value


# Nesting that Python's JSON encoder still writes (a page is built with it); deeper bodies are text.
deep_values = st.integers(1, 400).map(nested)
extracted_data = (json_values | json_values.map(lambda value: json.dumps(value)) | odd_text | huge_text | deep_values
                  | st.dictionaries(st.sampled_from(["name", "email", "$where", "a.b", "", "_id", "budget", "\x00"]),
                                    json_values | huge_text, max_size=5))
phone_like = st.sampled_from(["+91 98765 43210", "09876543210", "+0000", "1" * 25, "abc", "", "+", "٩٨٧٦٥٤٣٢١٠",
                              "+91\x0098765\x0043210", "98765-43210-x", "(415) 555-2671"]) | odd_text
telephony = st.fixed_dictionaries({}, optional={
    "to_number": phone_like | json_values, "from_number": phone_like | json_values,
    "call_type": st.sampled_from(["inbound", "outbound", "INBOUND", ""]) | json_values,
    "duration": numbers | json_values, "recording_url": odd_text | huge_text | json_values,
    "hangup_reason": odd_text | json_values,
})
statuses = st.sampled_from(sorted(TERMINAL_STATUSES) + ["in-progress", "queued", "ringing", "Completed", ""])


def executions(call_id) -> st.SearchStrategy:
    """An execution-shaped object whose every field may be of the wrong type, huge or odd."""
    call_ids = st.just(call_id) if isinstance(call_id, str) else call_id
    return st.fixed_dictionaries({"id": call_ids, "created_at": dates}, optional={
        "status": statuses | json_values, "updated_at": dates, "agent_id": odd_text | json_values,
        "batch_id": odd_text | json_values, "conversation_duration": numbers | json_values,
        "conversation_time": numbers | json_values, "total_cost": numbers | json_values,
        "transcript": odd_text | huge_text | json_values, "summary": odd_text | huge_text | json_values,
        "extracted_data": extracted_data, "telephony_data": telephony | json_values,
        "answered_by_voice_mail": st.booleans() | json_values,
    })


hostile_ids = odd_text | json_values | st.sampled_from(["x" * 10_000, " ", "\x00", "\ud800"])
# Anything that may sit in a page's `data` list: a hostile execution, or not an execution at all.
page_items = executions(hostile_ids) | json_values


def _deep_text(depth: int) -> bytes:
    return b'{"id": "deep", "created_at": "2026-01-01T00:00:00Z", "extracted_data": ' \
        + b"[" * depth + b"1" + b"]" * depth + b"}"


# A webhook body: a hostile execution, any JSON, nesting far past what a recursive parser takes,
# bytes that are not UTF-8 or not JSON, a body over the size limit.
webhook_bodies = (executions(hostile_ids | st.text(min_size=1, max_size=20)).map(lambda value: json.dumps(value).encode())
                  | json_values.map(lambda value: json.dumps(value).encode())
                  | st.integers(1, 200_000).map(_deep_text)
                  | st.binary(max_size=200)
                  | huge_text.map(lambda text: json.dumps({"id": "huge", "transcript": text * 2}).encode()))
