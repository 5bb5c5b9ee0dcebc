"""Logging set-up: one line per event on stdout, text or JSON, with secrets and phone numbers masked.

Code should not log personal data in the first place (use `mask_phone`); the redaction filter
is the safety net for what slips through, e.g. a number quoted inside an upstream error message.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

from utils.phone import mask_phone

# Fields a caller may attach with `extra=` that belong in a structured line.
CONTEXT_FIELDS = ("job", "run_id", "event", "agent_id", "call_id", "counts", "status")

_PHONE_LIKE = re.compile(r"(?<![\w.-])(?:\+\d[\d ()-]{7,}\d|\d{10,15})(?![\w-])")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")


class RedactingFilter(logging.Filter):
    """Masks registered secrets, bearer tokens and phone-number-like text in every record."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = _BEARER.sub(r"\1***", text)
        return _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
                           if name != "event" and hasattr(record, name))
        return f"{text} [{context}]" if context else text


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: tuple[str, ...] = (),
                  stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (connection pools, scheduler internals) only when debugging.
    for noisy in ("urllib3", "httpx", "httpcore", "apscheduler", "groq", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
