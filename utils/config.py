"""Settings from environment variables (and `.env`), validated once at start-up."""
from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping

import phonenumbers
from pymongo import uri_parser
from pymongo.errors import ConfigurationError, InvalidURI

from models.customer import DEFAULT_PRECEDENCE
from services.analyzer.pricing import DEFAULT_PRICES, Price
from utils.phone import DEFAULT_REGION

# The addresses Bolna documents sending webhooks from (shared/bolna-api.md, 2026-11).
BOLNA_SENDER_IPS = ("13.203.39.153", "13.126.9.249", "13.202.133.53")
MIN_WEBHOOK_TOKEN_CHARS = 24
DEFAULT_TAGS = ("Purchased", "follow_up", "Interested", "Not_Interested", "No_Answer")
# Keys of the analysis the LLM returns; configured extra fields may not reuse them.
ANALYSIS_KEYS = ("tag", "summary", "leadScore", "leadStatus", "sentiment", "confidence", "reasoning")


class ConfigError(ValueError):
    """One bad setting; the message names the variable and never contains its value if secret."""


@dataclass(frozen=True)
class ExtraField:
    """An extra intelligence field asked of the LLM and copied onto the contact."""
    name: str
    description: str
    type: str = "string"  # string | number | boolean


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = field(default=None, repr=False)  # may hold a password
    mongodb_db: str = "callsync"
    bolna_api_key: str | None = field(default=None, repr=False)
    bolna_base_url: str = "https://api.bolna.ai"
    bolna_agent_ids: tuple[str, ...] = ()
    bolna_page_size: int = 50
    http_timeout_seconds: float = 30.0
    http_max_attempts: int = 5
    http_backoff_seconds: float = 1.0
    backfill_days: int = 30
    sync_overlap_minutes: int = 10
    groq_api_keys: tuple[str, ...] = field(default=(), repr=False)
    # llama-3.3-70b-versatile, the earlier default, was decommissioned on 2026-08-16 (404 model_not_found).
    groq_model: str = "openai/gpt-oss-20b"
    groq_base_url: str | None = None
    groq_answer_format: str = "auto"  # auto | json_schema | json_object (services/analyzer/request.py)
    groq_reasoning_effort: str = "low"  # sent to the models that take it (gpt-oss)
    sync_interval_minutes: int = 5
    llm_batch_limit: int = 10
    llm_request_budget: int | None = None  # None: see llm_requests_per_run
    llm_concurrency: int = 4
    llm_batch_deadline_seconds: float = 120.0
    llm_timeout_seconds: float = 30.0
    llm_prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    llm_batch_mode: str = "auto"  # auto | off | always: the Batch API lane (services/analyzer/batch_api.py)
    llm_batch_api_max_calls: int = 5000
    llm_batch_api_window: str = "24h"
    # Groq's docs said 25 % in 2025 and 50 % in 2026: check console.groq.com/pricing.
    llm_batch_api_discount: float = 0.5
    min_transcript_chars: int = 15
    transcript_char_budget: int = 12000
    analysis_tags: tuple[str, ...] = DEFAULT_TAGS
    analysis_extra_fields: tuple[ExtraField, ...] = ()
    default_phone_region: str = DEFAULT_REGION
    status_precedence: tuple[tuple[str, ...], ...] = DEFAULT_PRECEDENCE
    log_level: str = "INFO"
    log_format: str = "text"
    health_port: int | None = None
    health_host: str = "127.0.0.1"
    health_max_age_intervals: float = 3.0
    run_retention_days: int = 30
    # Personal data (docs/privacy.md): None keeps transcripts and call documents without limit.
    transcript_retention_days: int | None = None
    record_retention_days: int | None = None
    privacy_hash_key: str | None = field(default=None, repr=False)  # keys the hashes of erased numbers
    auto_assign_min_confidence: int = 60  # below it a stage move waits for a person's review
    # Bolna webhooks (worker/webhook_listener.py): off unless WEBHOOK_PORT is set.
    webhook_port: int | None = None
    webhook_host: str = "127.0.0.1"  # behind a reverse proxy on the same host; 0.0.0.0 in a container
    webhook_token: str | None = field(default=None, repr=False)  # the secret in the URL's path
    webhook_allowed_ips: tuple[str, ...] | None = BOLNA_SENDER_IPS  # None: any sender
    webhook_trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-For is believed
    webhook_max_body_bytes: int = 1_048_576
    webhook_public_url: str | None = None  # the listener's base URL as Bolna reaches it (https://…)
    webhook_inbox_days: int = 3  # accepted deliveries are kept this long (TTL)
    # Bolna's documented limits per organisation (services/bolna_pacing.py), and the share left unused.
    bolna_listing_rate_per_minute: int = 500
    bolna_rate_per_minute: int = 1000
    bolna_rate_headroom: float = 0.1
    bolna_fetch_concurrency: int = 8   # full records (GET /executions/{id}) in flight at once
    # A full record fetched for one job, kept for the other (services/record_cache.py).
    bolna_record_cache_size: int = 10000
    bolna_record_cache_seconds: int = 1800

    @property
    def llm_batch_api_window_seconds(self) -> int:
        return _window_hours(self.llm_batch_api_window) * 3600

    @property
    def llm_requests_per_run(self) -> int:
        """HTTP requests to the LLM a run may make, retries included: twice the batch limit unless
        set, so a 429 storm or an outage costs a bounded number of requests."""
        return self.llm_request_budget if self.llm_request_budget is not None else 2 * self.llm_batch_limit

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


def _stripped(value: str) -> str:
    return value.strip()


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int_at_least(value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"must be a whole number of at least {minimum}")
    return number


def _positive_int(value: str) -> int:
    return _int_at_least(value, 1)


def _non_negative_int(value: str) -> int:
    return _int_at_least(value, 0)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise ValueError("must be a number above 0")
    return number


def _url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _mongo_uri(value: str) -> str:
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


def _region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code such as IN or US")
    return region


def _precedence(value: str) -> tuple[tuple[str, ...], ...]:
    """`Booked>Callback=Interested>Contacted`: highest first, `=` between equal ranks."""
    groups = tuple(tuple(status.strip() for status in group.split("=")) for group in value.split(">"))
    statuses = [status for group in groups for status in group]
    if not all(statuses):
        raise ValueError("must list statuses from highest to lowest, e.g. Booked>Callback=Interested>Contacted")
    if len(set(statuses)) != len(statuses):
        raise ValueError("names a status twice")
    return groups


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in ("text", "json"):
        raise ValueError("must be text or json")
    return fmt


def _answer_format(value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("auto", "json_schema", "json_object"):
        raise ValueError("must be auto, json_schema or json_object")
    return mode


def _batch_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in ("auto", "off", "always"):
        raise ValueError("must be auto, off or always")
    return mode


def _completion_window(value: str) -> str:
    """Groq takes 24h to 7d."""
    window = value.strip().lower()
    hours = _window_hours(window)
    if hours is None or not 24 <= hours <= 7 * 24:
        raise ValueError("must be a duration from 24h to 7d, such as 24h, 48h or 7d")
    return window


def _window_hours(window: str) -> int | None:
    number, unit = window[:-1], window[-1:]
    if not number.isdigit() or unit not in ("h", "d"):
        return None
    return int(number) * (24 if unit == "d" else 1)


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 1:
        raise ValueError("must be a fraction from 0 up to (not including) 1, such as 0.5")
    return number


def _reasoning_effort(value: str) -> str:
    effort = value.strip().lower()
    if effort not in ("low", "medium", "high"):
        raise ValueError("must be low, medium or high")
    return effort


def _percentage(value: str) -> int:
    number = _int_at_least(value, 0)
    if number > 100:
        raise ValueError("must be a whole number from 0 to 100")
    return number


def _port(value: str) -> int:
    port = _int_at_least(value, 0)
    if port > 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def _prices(value: str) -> dict[str, Price]:
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


def _extra_fields(value: str) -> tuple[ExtraField, ...]:
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


def _hash_key(value: str) -> str:
    """A short key would let anyone holding the hashes try every number of a country quickly."""
    if len(value) < MIN_HASH_KEY_CHARS:
        raise ValueError(f"must be at least {MIN_HASH_KEY_CHARS} characters: a random secret such as "
                         "the output of `openssl rand -hex 32`")
    return value


def _webhook_token(value: str) -> str:
    """The path secret is all that keeps strangers out when the allow-list is off: long, and
    URL-safe so it survives every proxy unchanged."""
    if len(value) < MIN_WEBHOOK_TOKEN_CHARS or not all(ch.isalnum() or ch in "-_" for ch in value):
        raise ValueError(f"must be at least {MIN_WEBHOOK_TOKEN_CHARS} letters, digits, '-' or '_': "
                         "e.g. the output of `openssl rand -hex 24`")
    return value


def _networks(value: str) -> tuple[str, ...]:
    """Addresses or CIDR ranges, comma-separated, each checked here so a typo fails at start-up."""
    networks = _csv(value)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"{network!r} is not an IP address or range such as 10.0.0.0/8") from None
    return networks


def _allowed_senders(value: str) -> tuple[str, ...] | None:
    """`any` turns the allow-list off (e.g. behind a proxy that filters senders itself)."""
    return None if value.strip().lower() == "any" else _networks(value)


# variable -> (settings attribute, parser, secret)
_VARIABLES: dict[str, tuple[str, Callable[[str], object], bool]] = {
    "MONGODB_URI": ("mongodb_uri", _mongo_uri, True),  # may hold a password
    "MONGODB_DB": ("mongodb_db", _stripped, False),
    "BOLNA_API_KEY": ("bolna_api_key", _stripped, True),
    "BOLNA_BASE_URL": ("bolna_base_url", _url, False),
    "BOLNA_AGENT_IDS": ("bolna_agent_ids", _csv, False),
    "BOLNA_PAGE_SIZE": ("bolna_page_size", _positive_int, False),
    "HTTP_TIMEOUT_SECONDS": ("http_timeout_seconds", _positive_float, False),
    "HTTP_MAX_ATTEMPTS": ("http_max_attempts", _positive_int, False),
    "HTTP_BACKOFF_SECONDS": ("http_backoff_seconds", _positive_float, False),
    "BACKFILL_DAYS": ("backfill_days", _positive_int, False),
    "SYNC_OVERLAP_MINUTES": ("sync_overlap_minutes", _non_negative_int, False),
    "GROQ_API_KEY": ("groq_api_keys", _csv, True),
    "GROQ_MODEL": ("groq_model", _stripped, False),
    "GROQ_BASE_URL": ("groq_base_url", _url, False),
    "GROQ_ANSWER_FORMAT": ("groq_answer_format", _answer_format, False),
    "GROQ_REASONING_EFFORT": ("groq_reasoning_effort", _reasoning_effort, False),
    "SYNC_INTERVAL_MINUTES": ("sync_interval_minutes", _positive_int, False),
    "LLM_BATCH_LIMIT": ("llm_batch_limit", _non_negative_int, False),
    "LLM_CONCURRENCY": ("llm_concurrency", _positive_int, False),
    "LLM_REQUEST_BUDGET": ("llm_request_budget", _non_negative_int, False),
    "LLM_BATCH_DEADLINE_SECONDS": ("llm_batch_deadline_seconds", _positive_float, False),
    "LLM_TIMEOUT_SECONDS": ("llm_timeout_seconds", _positive_float, False),
    "LLM_PRICES": ("llm_prices", _prices, False),
    "LLM_BATCH_MODE": ("llm_batch_mode", _batch_mode, False),
    "LLM_BATCH_API_MAX_CALLS": ("llm_batch_api_max_calls", _positive_int, False),
    "LLM_BATCH_API_WINDOW": ("llm_batch_api_window", _completion_window, False),
    "LLM_BATCH_API_DISCOUNT": ("llm_batch_api_discount", _fraction, False),
    "MIN_TRANSCRIPT_CHARS": ("min_transcript_chars", _non_negative_int, False),
    "TRANSCRIPT_CHAR_BUDGET": ("transcript_char_budget", _positive_int, False),
    "ANALYSIS_TAGS": ("analysis_tags", _csv, False),
    "ANALYSIS_EXTRA_FIELDS": ("analysis_extra_fields", _extra_fields, False),
    "DEFAULT_PHONE_REGION": ("default_phone_region", _region, False),
    "STATUS_PRECEDENCE": ("status_precedence", _precedence, False),
    "LOG_LEVEL": ("log_level", _log_level, False),
    "LOG_FORMAT": ("log_format", _log_format, False),
    "HEALTH_PORT": ("health_port", _port, False),
    "HEALTH_HOST": ("health_host", _stripped, False),
    "HEALTH_MAX_AGE_INTERVALS": ("health_max_age_intervals", _positive_float, False),
    "RUN_RETENTION_DAYS": ("run_retention_days", _positive_int, False),
    "TRANSCRIPT_RETENTION_DAYS": ("transcript_retention_days", _positive_int, False),
    "RECORD_RETENTION_DAYS": ("record_retention_days", _positive_int, False),
    "PRIVACY_HASH_KEY": ("privacy_hash_key", _hash_key, True),
    "AUTO_ASSIGN_MIN_CONFIDENCE": ("auto_assign_min_confidence", _percentage, False),
    "WEBHOOK_PORT": ("webhook_port", _port, False),
    "WEBHOOK_HOST": ("webhook_host", _stripped, False),
    "WEBHOOK_TOKEN": ("webhook_token", _webhook_token, True),
    "WEBHOOK_ALLOWED_IPS": ("webhook_allowed_ips", _allowed_senders, False),
    "WEBHOOK_TRUSTED_PROXIES": ("webhook_trusted_proxies", _networks, False),
    "WEBHOOK_MAX_BODY_BYTES": ("webhook_max_body_bytes", _positive_int, False),
    "WEBHOOK_PUBLIC_URL": ("webhook_public_url", _url, False),
    "WEBHOOK_INBOX_DAYS": ("webhook_inbox_days", _positive_int, False),
    "BOLNA_LISTING_RATE_PER_MINUTE": ("bolna_listing_rate_per_minute", _positive_int, False),
    "BOLNA_RATE_PER_MINUTE": ("bolna_rate_per_minute", _positive_int, False),
    "BOLNA_RATE_HEADROOM": ("bolna_rate_headroom", _fraction, False),
    "BOLNA_FETCH_CONCURRENCY": ("bolna_fetch_concurrency", _positive_int, False),
    "BOLNA_RECORD_CACHE_SIZE": ("bolna_record_cache_size", _non_negative_int, False),
    "BOLNA_RECORD_CACHE_SECONDS": ("bolna_record_cache_seconds", _non_negative_int, False),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `environ` (default: the process environment after loading `.env`).
    An empty variable counts as unset. Raises ConfigError naming the first bad variable."""
    if environ is None:
        from dotenv import load_dotenv

        # The working directory's .env, as documented (not one found next to the code); real
        # environment variables win over it.
        load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
        environ = os.environ
    values: dict[str, object] = {}
    for variable, (attribute, parse, secret) in _VARIABLES.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        try:
            values[attribute] = parse(raw)
        except (ValueError, json.JSONDecodeError) as exc:
            shown = "" if secret else f" (got {raw!r})"
            raise ConfigError(f"{variable} is invalid{shown}: {exc}") from None
    settings = Settings(**values)
    if not settings.analysis_tags:
        raise ConfigError("ANALYSIS_TAGS must name at least one tag")
    if settings.webhook_port is not None and not settings.webhook_token:
        raise ConfigError("WEBHOOK_PORT is set but WEBHOOK_TOKEN is not: the listener needs its secret path")
    return settings


def describe(settings: Settings) -> dict[str, object]:
    """Settings safe to log: secrets reduced to whether they are set."""
    secret_attributes = {attr for attr, _, secret in _VARIABLES.values() if secret}
    out: dict[str, object] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = (bool(value) if f.name in secret_attributes else value)
    return out
