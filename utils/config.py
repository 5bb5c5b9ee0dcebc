"""Settings from environment variables (and `.env`), validated once at start-up. Each setting is
declared once, as a field of `Settings`: its type, its default, the parser of its variable's text
and whether it is a secret. The variable is the field's name in capitals unless the declaration
names another. A parser returns the value or raises ValueError saying what is expected;
`load_settings` names the variable (and never shows a secret's text). What each setting means:
the README's tables and `.env.example`, checked against this declaration by
tests/test_documented_settings.py."""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import phonenumbers
from cryptography.fernet import Fernet
from pymongo import uri_parser
from pymongo.errors import ConfigurationError, InvalidURI

from utils.phone import DEFAULT_REGION

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """One bad setting; the message names the variable and never contains its value if secret."""


# The addresses Bolna documents sending webhooks from (shared/bolna-api.md, 2026-11).
BOLNA_SENDER_IPS = ("13.203.39.153", "13.126.9.249", "13.202.133.53")
MIN_WEBHOOK_TOKEN_CHARS = 24
MIN_HASH_KEY_CHARS = 16
# The customer statuses the CRM sync sets (models/customer.py), and their default order
# (`STATUS_PRECEDENCE`): highest first; statuses in one group rank equal.
BOOKED, CALLBACK, INTERESTED, NOT_INTERESTED = "Booked", "Callback", "Interested", "Not Interested"
CONTACTED, VOICEMAIL, NO_ANSWER = "Contacted", "Voicemail", "No Answer"
DEFAULT_PRECEDENCE = ((BOOKED,), (CALLBACK, INTERESTED, NOT_INTERESTED), (CONTACTED,), (VOICEMAIL,), (NO_ANSWER,))
DEFAULT_TAGS = ("Purchased", "follow_up", "Interested", "Not_Interested", "No_Answer")
# Keys of the analysis the LLM returns; configured extra fields may not reuse them.
ANALYSIS_KEYS = ("tag", "summary", "leadScore", "leadStatus", "sentiment", "confidence", "reasoning")
# Many accounts (services/accounts): where each setting of an account is read in its document.
# The names are the daemon's; the paths (dotted for nested fields) are the CRM's, overridable.
DEFAULT_ACCOUNT_FIELDS = {
    "bolnaApiKey": "bolnaApiKey",
    "agentIds": "bolnaAgentIds",
    "groqApiKey": "groqApiKey",
    "phoneRegion": "phoneRegion",
    "llmBatchLimit": "callsync.llmBatchLimit",
    "bolnaRequestsPerMinute": "callsync.bolnaRequestsPerMinute",
}


@dataclass(frozen=True)
class Price:
    """What an LLM's tokens cost, in USD per million (services/analyzer/schema.py estimates)."""
    input_per_million: float
    output_per_million: float


# Groq's on-demand prices, checked 2026-11 (console.groq.com/pricing); `LLM_PRICES` adds or
# overrides models.
DEFAULT_PRICES: dict[str, Price] = {
    "openai/gpt-oss-20b": Price(0.075, 0.30),
    "openai/gpt-oss-120b": Price(0.15, 0.60),
    "qwen/qwen3.6-27b": Price(0.60, 3.00),
}


@dataclass(frozen=True)
class ExtraField:
    """An extra intelligence field asked of the LLM and copied onto the contact."""
    name: str
    description: str
    type: str = "string"  # string | number | boolean


def csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def number(kind: type, accepted: Callable[[float], bool], expected: str) -> Callable[[str], Any]:
    """A parser of a number of `kind` in the range `accepted` checks (not a number is in none)."""

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = math.nan
        if not accepted(number):
            raise ValueError(f"must be {expected}")
        return number

    return parse


def whole(minimum: int, maximum: float = math.inf) -> Callable[[str], int]:
    span = f"of at least {minimum}" if maximum == math.inf else f"from {minimum} to {maximum}"
    return number(int, lambda value: minimum <= value <= maximum, f"a whole number {span}")


positive_int = whole(1)
non_negative_int = whole(0)
port = whole(0, 65535)
positive_float = number(float, lambda value: 0 < value < math.inf, "a number above 0")
fraction = number(float, lambda value: 0 <= value < 1, "a fraction from 0 up to (not including) 1, such as 0.5")


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


def completion_window(value: str) -> str:
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


def prices(value: str) -> dict[str, Price]:
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


def hash_key(value: str) -> str:
    """A short key would let anyone holding the hashes try every number of a country quickly."""
    if len(value) < MIN_HASH_KEY_CHARS:
        raise ValueError(f"must be at least {MIN_HASH_KEY_CHARS} characters: a random secret such as "
                         "the output of `openssl rand -hex 32`")
    return value


def path_token(value: str) -> str:
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


def json_object(value: str) -> dict[str, object]:
    document = json.loads(value)
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object, i.e. a MongoDB query such as {"plan": "pro"}')
    return document


def collection_name(value: str) -> str:
    name = value.strip()
    if "$" in name or "\0" in name or name.startswith("system.") or name.startswith(".") or name.endswith("."):
        raise ValueError("must be a MongoDB collection name (no '$', not system.*)")
    return name


def account_field_paths(value: str) -> dict[str, str]:
    """Over DEFAULT_ACCOUNT_FIELDS. A misspelt name would silently keep the default, so it is refused."""
    overrides = json_object(value)
    unknown = sorted(set(overrides) - set(DEFAULT_ACCOUNT_FIELDS))
    if unknown:
        raise ValueError(f"unknown field name(s) {', '.join(map(repr, unknown))}: "
                         f"the names are {', '.join(DEFAULT_ACCOUNT_FIELDS)}")
    for name, path in overrides.items():
        if (not isinstance(path, str) or not path.strip() or path.startswith("$")
                or not all(part.strip() for part in path.split("."))):
            raise ValueError(f"the path of {name!r} must be a field name, dotted for a nested field (a.b)")
    return {**DEFAULT_ACCOUNT_FIELDS, **{name: path.strip() for name, path in overrides.items()}}


def fernet_keys(value: str) -> tuple[str, ...]:
    """One Fernet key, or several comma-separated while rotating: the first encrypts, all decrypt.
    The message says which part is wrong by its position, never by its text (the value is secret)."""
    parts = csv(value)
    if not parts:
        raise ValueError("must hold at least one Fernet key")
    for position, part in enumerate(parts, 1):
        try:
            Fernet(part)
        except (ValueError, TypeError):
            raise ValueError(f"key {position} of {len(parts)} is not a Fernet key: 32 url-safe base64-encoded "
                             "bytes, as `Fernet.generate_key()` makes") from None
    return parts


def setting(default: object = None, parse: Callable[[str], object] = str.strip, *, secret: bool = False,
            variable: str | None = None, former: str | None = None) -> Any:
    """One setting's whole declaration. A secret is left out of `repr` and reduced to whether it
    is set by `describe`; a dict default is copied for each Settings. `former`: the variable's
    earlier name, still read (with a warning) where the current one is unset, so existing
    deployments keep working."""
    metadata = {"parse": parse, "secret": secret, "variable": variable, "former": former}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = setting(None, mongo_uri, secret=True)  # may hold a password
    mongodb_db: str = setting("callsync")
    bolna_api_key: str | None = setting(None, secret=True)
    bolna_base_url: str = setting("https://api.bolna.ai", url)
    bolna_agent_ids: tuple[str, ...] = setting((), csv)
    bolna_page_size: int = setting(50, positive_int)
    http_timeout_seconds: float = setting(30.0, positive_float)
    http_max_attempts: int = setting(5, positive_int)
    http_backoff_seconds: float = setting(1.0, positive_float)
    backfill_days: int = setting(30, positive_int)
    sync_overlap_minutes: int = setting(10, non_negative_int)
    groq_api_keys: tuple[str, ...] = setting((), csv, secret=True, variable="GROQ_API_KEY")
    # llama-3.3-70b-versatile, the earlier default, was decommissioned on 2026-08-16 (404 model_not_found).
    groq_model: str = setting("openai/gpt-oss-20b")
    groq_base_url: str | None = setting(None, url)
    groq_answer_format: str = setting("auto", one_of("auto", "json_schema", "json_object"))
    groq_reasoning_effort: str = setting("low", one_of("low", "medium", "high"))
    sync_interval_minutes: int = setting(5, positive_int)
    llm_calls_per_run: int = setting(10, non_negative_int, former="LLM_BATCH_LIMIT")
    llm_concurrency: int = setting(4, positive_int)
    llm_request_budget: int | None = setting(None, non_negative_int)  # None: see llm_requests_per_run
    llm_batch_deadline_seconds: float = setting(120.0, positive_float)
    llm_timeout_seconds: float = setting(30.0, positive_float)
    llm_prices: Mapping[str, Price] = setting(DEFAULT_PRICES, prices)
    llm_batch_mode: str = setting("auto", one_of("auto", "off", "always"))
    llm_batch_api_max_calls: int = setting(5000, positive_int)
    llm_batch_api_window: str = setting("24h", completion_window)
    # Groq's docs said 25 % in 2025 and 50 % in 2026: check console.groq.com/pricing.
    llm_batch_api_discount: float = setting(0.5, fraction)
    min_transcript_chars: int = setting(15, non_negative_int)
    transcript_char_budget: int = setting(12000, positive_int)
    analysis_tags: tuple[str, ...] = setting(DEFAULT_TAGS, csv)
    analysis_extra_fields: tuple[ExtraField, ...] = setting((), extra_fields)
    default_phone_region: str = setting(DEFAULT_REGION, region)
    status_precedence: tuple[tuple[str, ...], ...] = setting(DEFAULT_PRECEDENCE, precedence)
    log_level: str = setting("INFO", one_of("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = setting("text", one_of("text", "json"))
    health_port: int | None = setting(None, port)
    health_host: str = setting("127.0.0.1")
    health_max_age_intervals: float = setting(3.0, positive_float)
    job_deadline_seconds: float = setting(3600.0, positive_float)
    shutdown_grace_seconds: float = setting(30.0, positive_float)
    run_retention_days: int = setting(30, positive_int)
    transcript_retention_days: int | None = setting(None, positive_int)
    record_retention_days: int | None = setting(None, positive_int)
    privacy_hash_key: str | None = setting(None, hash_key, secret=True)  # keys the hashes of erased numbers
    auto_assign_min_confidence: int = setting(60, whole(0, 100))  # below it a stage move waits for a person's review
    webhook_port: int | None = setting(None, port)
    webhook_host: str = setting("127.0.0.1")  # behind a reverse proxy on the same host; 0.0.0.0 in a container
    webhook_token: str | None = setting(None, path_token, secret=True)  # the secret in the URL's path
    # `any` (None) turns the allow-list off, e.g. behind a proxy that filters senders itself.
    webhook_allowed_ips: tuple[str, ...] | None = setting(
        BOLNA_SENDER_IPS, lambda value: None if value.strip().lower() == "any" else networks(value))
    webhook_trusted_proxies: tuple[str, ...] = setting((), networks)  # whose X-Forwarded-For is believed
    webhook_max_body_bytes: int = setting(1_048_576, positive_int)
    webhook_public_url: str | None = setting(None, url)  # the listener's base URL as Bolna reaches it (https://…)
    webhook_inbox_days: int = setting(3, positive_int)  # accepted deliveries are kept this long (TTL)
    webhook_max_waiting: int = setting(5000, positive_int)  # an account's deliveries waiting at once; beyond it, 429
    # Bolna's documented limits per organisation (services/bolna_client.py), and the share left unused.
    bolna_listing_rate_per_minute: int = setting(500, positive_int)
    bolna_rate_per_minute: int = setting(1000, positive_int)
    bolna_rate_headroom: float = setting(0.1, fraction)
    bolna_fetch_concurrency: int = setting(8, positive_int)  # full records (GET /executions/{id}) in flight at once
    bolna_record_cache_size: int = setting(10000, non_negative_int)
    bolna_record_cache_seconds: int = setting(1800, non_negative_int)
    account_source: str = setting("env", one_of(
        "env", "mongodb", explained="env (one account, from BOLNA_API_KEY) or mongodb (the accounts collection)"),
        former="TENANT_SOURCE")
    accounts_collection: str = setting("users", collection_name, former="TENANTS_COLLECTION")
    # None: see accounts_query
    accounts_filter: Mapping[str, object] | None = setting(None, json_object, former="TENANTS_FILTER")
    account_fields: Mapping[str, str] = setting(DEFAULT_ACCOUNT_FIELDS, account_field_paths,
                                                former="TENANT_FIELDS")
    account_keys_secret: str | None = setting(None, lambda value: ",".join(fernet_keys(value)), secret=True,
                                              former="TENANT_KEYS_SECRET")
    # Renewed every third of it: much shorter, and a slow MongoDB round trip would lose it.
    account_lease_seconds: int = setting(120, whole(15), former="TENANT_LEASE_SECONDS")
    account_poll_seconds: int = setting(5, positive_int, former="TENANT_POLL_SECONDS")
    account_concurrency: int = setting(4, positive_int, former="TENANT_CONCURRENCY")
    account_refresh_seconds: int = setting(60, positive_int, former="TENANT_REFRESH_SECONDS")
    llm_global_limit: int | None = setting(None, non_negative_int)

    @property
    def llm_batch_api_window_seconds(self) -> int:
        return window_hours(self.llm_batch_api_window) * 3600

    @property
    def llm_requests_per_run(self) -> int:
        """HTTP requests to the LLM a run may make, retries included: twice the batch limit unless
        set, so a 429 storm or an outage costs a bounded number of requests."""
        return self.llm_request_budget if self.llm_request_budget is not None else 2 * self.llm_calls_per_run

    @property
    def accounts_query(self) -> Mapping[str, object]:
        """Derived here rather than stored, so the default follows ACCOUNT_FIELDS' key path however the
        settings were built."""
        if self.accounts_filter is not None:
            return self.accounts_filter
        return {self.account_fields["bolnaApiKey"]: {"$nin": [None, ""]},
                "subscription.status": {"$in": ["active", "trial"]}}

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


VARIABLES: dict[str, Field] = {f.metadata["variable"] or f.name.upper(): f for f in fields(Settings)}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `environ` (default: the process environment after loading `.env`).
    An empty variable counts as unset. Raises ConfigError naming the first bad variable."""
    if environ is None:
        from dotenv import load_dotenv

        # The working directory's .env, as documented (not one found next to the code); real
        # environment variables win over it.
        load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
        environ = os.environ
    parsed: dict[str, object] = {}
    for variable, declared in VARIABLES.items():
        raw = environ.get(variable, "").strip()
        former = declared.metadata["former"]
        if not raw and former and environ.get(former, "").strip():
            log.warning("%s is deprecated: it is read as %s, its new name", former, variable)
            variable, raw = former, environ[former].strip()
        if not raw:
            continue
        try:
            parsed[declared.name] = declared.metadata["parse"](raw)
        except ValueError as exc:  # json.JSONDecodeError is one too
            shown = "" if declared.metadata["secret"] else f" (got {raw!r})"
            raise ConfigError(f"{variable} is invalid{shown}: {exc}") from None
    settings = Settings(**parsed)
    if not settings.analysis_tags:
        raise ConfigError("ANALYSIS_TAGS must name at least one tag")
    if settings.webhook_port is not None and not settings.webhook_token:
        raise ConfigError("WEBHOOK_PORT is set but WEBHOOK_TOKEN is not: the listener needs its secret path")
    return settings


def describe(settings: Settings) -> dict[str, object]:
    """Settings safe to log: secrets reduced to whether they are set."""
    return {f.name: bool(getattr(settings, f.name)) if f.metadata["secret"] else getattr(settings, f.name)
            for f in fields(settings)}


def secret_texts(settings: Settings) -> tuple[str, ...]:
    """The text of every secret that is set, for the log filter to mask: each whole, and each part
    of a comma-separated one (GROQ_API_KEY's keys, ACCOUNT_KEYS_SECRET's ring are used one by one)."""
    texts: list[str] = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.metadata["secret"] and value:
            whole = ",".join(value) if isinstance(value, tuple) else value
            texts += [whole, *csv(whole)]
    return tuple(texts)
