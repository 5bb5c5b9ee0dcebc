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

REGION = "IN"


def mapping(total: int) -> tuple[Measurement, Measurement, Measurement]:
    """(first pass: numbers new to the process, second pass: the same calls again, baseline)."""
    executions = generate(agents=4, per_agent=total // 4, seed=505, transcript_chars=600)[1]
    return _timed(executions, _map), _timed(executions, _map), _timed(executions, _map_uncached)


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
