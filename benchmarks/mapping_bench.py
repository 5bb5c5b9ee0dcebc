"""Mapping and phone normalization alone, on one core: raw execution -> `calls` and `customers`
fields, no I/O. The baseline parses every number again (no cache), as a per-record script would."""
from __future__ import annotations

import time

import phonenumbers

from benchmarks.harness import Measurement
from fakes.dataset import generate
from models.call import call_fields
from models.customer import customer_call
from models.execution import parse_execution
from utils.phone import _parsed_e164, _to_e164

REGION = "IN"


def mapping(total: int) -> tuple[Measurement, Measurement, Measurement, Measurement]:
    """(first pass: numbers new to the process, second pass: the same calls again, other calls
    whose numbers are all E.164 as telephony providers send them, baseline). The data set writes
    numbers in many spellings (legacy formats), so the first pass mostly takes the slow path."""
    executions = generate(agents=4, per_agent=total // 4, seed=505, transcript_chars=600)[1]
    first, again = _timed(executions, _map), _timed(executions, _map)
    e164 = _as_e164(generate(agents=4, per_agent=total // 4, seed=515, transcript_chars=600)[1])
    _to_e164.cache_clear()  # every number new to the process again
    return first, again, _timed(e164, _map), _timed(executions, _map_uncached)


def _as_e164(executions: list[dict]) -> list[dict]:
    for record in executions:
        telephony = record["telephony_data"]
        for field in ("to_number", "from_number"):
            if telephony.get(field):
                telephony[field] = _parsed_e164(telephony[field].strip(), REGION) or telephony[field]
    return executions


def _timed(executions: list[dict], convert) -> Measurement:
    started = time.perf_counter()
    for record in executions:
        convert(record)
    return Measurement(seconds=time.perf_counter() - started, records=len(executions))


def _map(record: dict) -> None:
    execution = parse_execution(record, REGION)  # normalizes both numbers
    call_fields(execution)
    customer_call(execution)


def _map_uncached(record: dict) -> None:
    execution = parse_execution(record)
    customer_call(execution)
    for number in (execution.to_number, execution.from_number, execution.customer_number):
        if number:
            try:
                parsed = phonenumbers.parse(number, REGION)
                phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            except phonenumbers.NumberParseException:
                pass
