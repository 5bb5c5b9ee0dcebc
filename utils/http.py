"""HTTP details shared by the API clients (Bolna, Groq): `Retry-After`, and the outcome of each
request for whoever counts them (worker/health.py). One outcome per request sent:

- `ok`: answered with success;
- `429`: rate limited (pacing keeps this near 0; retried after the server's wait);
- `retried`: failed otherwise (5xx, timeout, connection), and another attempt follows;
- `error`: failed otherwise, and no attempt follows (given up, or not worth retrying: a refused key).
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "retried", "429", "error")


class RequestOutcomes:
    def __init__(self):
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def __call__(self, outcome: str) -> None:
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:  # noqa: BLE001 - an observer must never fail a request
                log.exception("a request listener failed")


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds to wait: it is either a number of seconds or an HTTP date."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
