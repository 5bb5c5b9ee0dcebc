"""The outcome of each HTTP request to an outside API (Bolna, Groq), for whoever counts them
(worker/health.py). One outcome per request sent:

- `ok`: answered with success;
- `429`: rate limited (pacing keeps this near 0; retried after the server's wait);
- `retried`: failed otherwise (5xx, timeout, connection), and another attempt follows;
- `error`: failed otherwise, and no attempt follows (given up, or not worth retrying: a refused key).
"""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "retried", "429", "error")

RequestListener = Callable[[str], None]


class RequestOutcomes:
    def __init__(self):
        self._listeners: list[RequestListener] = []

    def subscribe(self, listener: RequestListener) -> None:
        self._listeners.append(listener)

    def __call__(self, outcome: str) -> None:
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:  # noqa: BLE001 - an observer must never fail a request
                log.exception("a request listener failed")
