"""Logging set-up: one line per event on stdout, text or JSON, with secrets and phone numbers masked.

Code should not log personal data in the first place (use `mask_phone`); the redaction filter
is the safety net for what slips through, e.g. a number quoted inside an upstream error message.
"""
from __future__ import annotations

import json
import logging
import contextlib
import contextvars
import re
import sys
import time
from typing import Callable
from datetime import datetime, timezone

from utils.phone import mask_phone

log = logging.getLogger(__name__)

# Fields a caller may attach with `extra=` that belong in a structured line.
CONTEXT_FIELDS = ("job", "run_id", "account", "event", "agent_id", "call_id", "counts", "status")

# The run a line belongs to (job, run_id, account), set around a run by `log_context` and added
# to every line logged under it that does not name its own, from any thread the run hands work to
# (`in_log_context`): a retry deep in an HTTP client says which run and account it is for.
_RUN_CONTEXT: contextvars.ContextVar[dict] = contextvars.ContextVar("callsync_log_context", default={})


@contextlib.contextmanager
def log_context(**fields):
    """Lines logged inside carry `fields` (None values are left out), on top of the outer context."""
    token = _RUN_CONTEXT.set({**_RUN_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _RUN_CONTEXT.reset(token)


def in_log_context(function: Callable, *args, **kwargs) -> Callable[[], object]:
    """`function(*args, **kwargs)` to run in another thread under this thread's log context (a
    thread pool's workers start with none). Call it where the work is handed over, once per task."""
    context = contextvars.copy_context()
    return lambda: context.run(function, *args, **kwargs)


class Listeners:
    """Whoever observes an event (a request's outcome, a finished run): each is called in turn, and
    one that fails is logged (as `event`), never raised to the caller."""

    def __init__(self, event: str):
        self.event = event
        self._listeners: list[Callable[[object], None]] = []

    def subscribe(self, listener: Callable) -> None:
        self._listeners.append(listener)

    def __call__(self, value: object) -> None:
        for listener in self._listeners:
            try:
                listener(value)
            except Exception:  # noqa: BLE001 - an observer (metrics, the watchdog) must never fail its caller
                log.exception("a listener failed", extra={"event": self.event})

# Every pattern here runs in linear time on any text (tests/test_regex_bounds.py): a log line
# can quote what a caller sent.
# A run of digits with the separators people write numbers with ("+91 98765 43210",
# "(415) 555-2671", "9876543210"), not inside a word, a path or a time; masked when it holds 10
# to 15 digits and is not a date. The pattern takes the whole run and `_mask_if_phone` finds where
# the number ends: a pattern backtracking to that end, tried from every digit of a run such as
# "1- 1- 1- ...", rescans the rest of the run each time (quadratic).
_NUMBER_RUN = re.compile(r"(?<![\w.:/-])\+?\(?\d[\d ().-]*")
_NUMBER_MIN_LENGTH = 8  # from the first digit to the last, separators included
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
# user:password@ in a URL, e.g. a MongoDB URI quoted by a driver error. The scheme starts only
# where a run of its characters starts, for the same reason as `_NUMBER_RUN`.
_URL_CREDENTIALS = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z0-9+.-]+://)[^/\s@]+@")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _NUMBER_RUN.sub(_mask_if_phone, text)


def _mask_if_phone(match: re.Match) -> str:
    """The run with the number at its start masked. The number ends at the run's last digit that
    no word character, ':' or '-' follows (an id such as "12345678-ab" is not a number)."""
    run = match.group(0)
    following = match.string[match.end():match.end() + 1]
    end = len(run)
    while end > 0 and not (run[end - 1].isdecimal() and not _continues_word(following)):
        following = run[end - 1]
        end -= 1
    first_digit = next(index for index, ch in enumerate(run) if ch.isdecimal())
    text = run[:end]
    if end - first_digit < _NUMBER_MIN_LENGTH:
        return run
    digits = sum(ch.isdecimal() for ch in text)
    number = mask_phone(text) if 10 <= digits <= 15 and not _DATE.match(text) else text
    return number + run[end:]


def _continues_word(ch: str) -> bool:
    return ch != "" and (ch.isalnum() or ch in "_:-")


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _RUN_CONTEXT.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        # Context fields are printed too, and an id can be anything an upstream or a user sent.
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, redact(value, self.secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


class LineFormatter(logging.Formatter):
    """One line per record, text or JSON, with the context fields that are set (not None)."""
    # UTC like the JSON lines and the stored times, so a log line and a run record compare directly.
    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, as_json: bool):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        context = {name: getattr(record, name) for name in CONTEXT_FIELDS
                   if getattr(record, name, None) is not None}
        if not self.as_json:
            text = super().format(record)
            fields = " ".join(f"{name}={value}" for name, value in context.items() if name != "event")
            return f"{text} [{fields}]" if fields else text
        line = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **context,
        }
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: tuple[str, ...] = (),
                  stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(LineFormatter(as_json=fmt == "json"))
    handler.addFilter(RedactingFilter(secrets))
    logging.basicConfig(handlers=[handler], level=level, force=True)  # the root's earlier handlers removed
    # Library chatter (connection pools, scheduler internals) only when debugging.
    for noisy in ("urllib3", "httpx", "httpcore", "apscheduler", "groq", "pymongo", "waitress"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    # Even at DEBUG: these log whole documents and request bodies (the accounts' keys read from
    # MongoDB, transcripts sent to the LLM), which the phone and secret masks cannot all recognize.
    for verbatim in ("pymongo.command", "groq._base_client"):
        logging.getLogger(verbatim).setLevel(logging.WARNING)
