"""Parsers of setting values: each takes the variable's text and returns its value or raises
ValueError saying what is expected (utils/config.py names the variable)."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Callable

import phonenumbers
from pymongo import uri_parser
from pymongo.errors import ConfigurationError, InvalidURI

from services.analyzer.pricing import DEFAULT_PRICES, Price

# The addresses Bolna documents sending webhooks from (shared/bolna-api.md, 2026-11).
BOLNA_SENDER_IPS = ("13.203.39.153", "13.126.9.249", "13.202.133.53")
MIN_WEBHOOK_TOKEN_CHARS = 24
DEFAULT_TAGS = ("Purchased", "follow_up", "Interested", "Not_Interested", "No_Answer")
# Keys of the analysis the LLM returns; configured extra fields may not reuse them.
ANALYSIS_KEYS = ("tag", "summary", "leadScore", "leadStatus", "sentiment", "confidence", "reasoning")



@dataclass(frozen=True)
class ExtraField:
    """An extra intelligence field asked of the LLM and copied onto the contact."""
    name: str
    description: str
    type: str = "string"  # string | number | boolean


def stripped(value: str) -> str:
    return value.strip()


def csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def int_at_least(value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"must be a whole number of at least {minimum}")
    return number


def positive_int(value: str) -> int:
    return int_at_least(value, 1)


def non_negative_int(value: str) -> int:
    return int_at_least(value, 0)


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise ValueError("must be a number above 0")
    return number


def url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def mongo_uri(value: str) -> str:
    value = value.strip()
    if not value.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("must start with mongodb:// or mongodb+srv://")
    if value.startswith("mongodb://"):
        # The driver's own parser, so every URI it would refuse later is refused here, with its
        # reason. (A mongodb+srv:// URI is resolved through DNS when the client starts.)
        try:
            uri_parser.parse_uri(value)
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None
    return value


def region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code such as IN or US")
    return region


def precedence(value: str) -> tuple[tuple[str, ...], ...]:
    """`Booked>Callback=Interested>Contacted`: highest first, `=` between equal ranks."""
    groups = tuple(tuple(status.strip() for status in group.split("=")) for group in value.split(">"))
    statuses = [status for group in groups for status in group]
    if not all(statuses):
        raise ValueError("must list statuses from highest to lowest, e.g. Booked>Callback=Interested>Contacted")
    if len(set(statuses)) != len(statuses):
        raise ValueError("names a status twice")
    return groups


def one_of(*choices: str, explained: str | None = None) -> Callable[[str], str]:
    """A parser of one word among `choices`, in any case (stored as the choices are written)."""
    by_folded = {choice.lower(): choice for choice in choices}

    def parse(value: str) -> str:
        choice = by_folded.get(value.strip().lower())
        if choice is None:
            raise ValueError("must be " + (explained or f"{', '.join(choices[:-1])} or {choices[-1]}"))
        return choice

    return parse


log_level = one_of("DEBUG", "INFO", "WARNING", "ERROR")
log_format = one_of("text", "json")
answer_format = one_of("auto", "json_schema", "json_object")
batch_mode = one_of("auto", "off", "always")
reasoning_effort = one_of("low", "medium", "high")


def completion_window(value: str) -> str:
    """Groq takes 24h to 7d."""
    window = value.strip().lower()
    hours = window_hours(window)
    if hours is None or not 24 <= hours <= 7 * 24:
        raise ValueError("must be a duration from 24h to 7d, such as 24h, 48h or 7d")
    return window


def window_hours(window: str) -> int | None:
    number, unit = window[:-1], window[-1:]
    if not number.isdigit() or unit not in ("h", "d"):
        return None
    return int(number) * (24 if unit == "d" else 1)


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 1:
        raise ValueError("must be a fraction from 0 up to (not including) 1, such as 0.5")
    return number


def percentage(value: str) -> int:
    number = int_at_least(value, 0)
    if number > 100:
        raise ValueError("must be a whole number from 0 to 100")
    return number


def port(value: str) -> int:
    port = int_at_least(value, 0)
    if port > 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def prices(value: str) -> dict[str, Price]:
    """JSON object of model -> [input, output] USD per million tokens, added to (or replacing
    entries of) the built-in table; e.g. {"openai/gpt-oss-20b": [0.075, 0.30]}"""
    table = json.loads(value)
    if not isinstance(table, dict):
        raise ValueError('must be a JSON object such as {"model": [input, output]} in USD per million tokens')
    prices = dict(DEFAULT_PRICES)
    for model, pair in table.items():
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in pair)):
            raise ValueError(f"the price of {model!r} must be [input, output], two numbers of at least 0")
        prices[model] = Price(float(pair[0]), float(pair[1]))
    return prices


def extra_fields(value: str) -> tuple[ExtraField, ...]:
    """JSON list of {"name", "description", "type"}; e.g.
    [{"name": "budget", "description": "Budget the caller mentioned", "type": "string"}]"""
    items = json.loads(value)
    if not isinstance(items, list):
        raise ValueError("must be a JSON list of {name, description, type} objects")
    extra: list[ExtraField] = []
    for item in items:
        if not isinstance(item, dict) or not str(item.get("name", "")).strip():
            raise ValueError("every entry needs a non-empty name")
        name = str(item["name"]).strip()
        # The name is a key of the LLM's JSON answer and a MongoDB field path (`extra.<name>`).
        if "." in name or name.startswith("$"):
            raise ValueError(f"field name {name!r} may not contain '.' or start with '$'")
        if name in ANALYSIS_KEYS or name in (field.name for field in extra):
            raise ValueError(f"field name {name!r} is already used")
        kind = item.get("type", "string")
        if kind not in ("string", "number", "boolean"):
            raise ValueError(f"type of {name!r} must be string, number or boolean")
        extra.append(ExtraField(name, str(item.get("description", "")), kind))
    return tuple(extra)


MIN_HASH_KEY_CHARS = 16


def hash_key(value: str) -> str:
    """A short key would let anyone holding the hashes try every number of a country quickly."""
    if len(value) < MIN_HASH_KEY_CHARS:
        raise ValueError(f"must be at least {MIN_HASH_KEY_CHARS} characters: a random secret such as "
                         "the output of `openssl rand -hex 32`")
    return value


def webhook_token(value: str) -> str:
    """The path secret is all that keeps strangers out when the allow-list is off: long, and
    URL-safe so it survives every proxy unchanged."""
    if len(value) < MIN_WEBHOOK_TOKEN_CHARS or not all(ch.isalnum() or ch in "-_" for ch in value):
        raise ValueError(f"must be at least {MIN_WEBHOOK_TOKEN_CHARS} letters, digits, '-' or '_': "
                         "e.g. the output of `openssl rand -hex 24`")
    return value


def networks(value: str) -> tuple[str, ...]:
    """Addresses or CIDR ranges, comma-separated, each checked here so a typo fails at start-up."""
    networks = csv(value)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not an IP address or range such as 10.0.0.0/8") from None
    return networks


def allowed_senders(value: str) -> tuple[str, ...] | None:
    """`any` turns the allow-list off (e.g. behind a proxy that filters senders itself)."""
    return None if value.strip().lower() == "any" else networks(value)


def json_object(value: str) -> dict[str, object]:
    document = json.loads(value)
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object, i.e. a MongoDB query such as {"plan": "pro"}')
    return document
