"""The pacer's arithmetic on a hand-driven clock: what Groq's headers say is left, the refill in
between, the wait for what is in flight, and a 429 that holds every request."""
import pytest

from services.analyzer.pacing import (INITIAL_COMPLETION_TOKENS, RECHECK_SECONDS, Deadline, DeadlineExceeded,
                                      LimitReading, RatePacer, limit_readings)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def headers(remaining_tokens, reset, limit=6000):
    return {"x-ratelimit-limit-tokens": str(limit), "x-ratelimit-remaining-tokens": str(remaining_tokens),
            "x-ratelimit-reset-tokens": reset, "x-ratelimit-limit-requests": "1000",
            "x-ratelimit-remaining-requests": "900", "x-ratelimit-reset-requests": "2m59.56s"}


def test_readings_come_from_the_documented_headers_and_garbled_ones_are_left_out():
    readings = limit_readings(headers(5000, "10s"))
    assert readings["tokens"] == LimitReading(6000, 5000, 10.0)
    assert readings["requests"] == LimitReading(1000, 900, 179.56)
    assert limit_readings({"x-ratelimit-remaining-tokens": "lots", "x-ratelimit-reset-tokens": "1s"}) == {}


def test_before_any_answer_one_request_goes_at_a_time():
    pacer = RatePacer(Clock())
    assert pacer._wait(1000, 100.0) == 0.0
    pacer.acquire(1000, Deadline(5))
    assert pacer._wait(1000, 100.0) == RECHECK_SECONDS


def test_a_request_waits_for_the_refill_it_needs():
    clock = Clock()
    pacer = RatePacer(clock)
    reserved = pacer.acquire(600, Deadline(5))
    # 1,000 of 6,000 left, whole again in 10 s: 500 tokens a second come back.
    pacer.settle(reserved, headers(1000, "10s"), completion_tokens=INITIAL_COMPLETION_TOKENS)
    assert pacer._wait(2000, clock.now) == pytest.approx(2.0)
    clock.now += 2.0
    assert pacer._wait(2000, clock.now) == 0.0


def test_what_is_in_flight_counts_until_it_settles():
    clock = Clock()
    pacer = RatePacer(clock)
    pacer.settle(pacer.acquire(100, Deadline(5)), headers(6000, "0s"), completion_tokens=0)
    first = pacer.acquire(3000, Deadline(5))
    # Another 3,000 would not fit beside the first, however long it waited.
    assert pacer._wait(3500, clock.now) == RECHECK_SECONDS
    pacer.settle(first, headers(2500, "35s"), completion_tokens=0)
    assert pacer._wait(2000, clock.now) == 0.0


def test_a_429_holds_every_request_and_a_wait_past_the_deadline_gives_up_at_once():
    clock = Clock()
    pacer = RatePacer(clock)
    pacer.pause(30)
    assert pacer._wait(10, clock.now) == 30
    with pytest.raises(DeadlineExceeded):
        pacer.acquire(10, Deadline(1))
