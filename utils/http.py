"""HTTP details shared by the API clients (Bolna, Groq): `Retry-After`, and the outcome of each
request for whoever counts them (each client's `outcomes`, a `utils.logging.Listeners`, observed
by worker/health.py). One outcome per request sent:

- `ok`: answered with success;
- `429`: rate limited (pacing keeps this near 0; retried after the server's wait);
- `retried`: failed otherwise (5xx, timeout, connection), and another attempt follows;
- `error`: failed otherwise, and no attempt follows (given up, or not worth retrying: a refused key).
"""
from __future__ import annotations

from email.utils import parsedate_to_datetime

from utils.clock import naive_utc, utcnow

OUTCOMES = ("ok", "retried", "429", "error")


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
        when = naive_utc(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds())
