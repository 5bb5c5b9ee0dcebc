"""Settings from environment variables (and `.env`), validated once at start-up. The parsers of
the values are in utils/config_values.py (and, for many accounts, utils/config_tenants.py)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping

from models.customer import DEFAULT_PRECEDENCE
from services.analyzer.pricing import DEFAULT_PRICES, Price
from utils import config_tenants as tenants
from utils import config_values as values
from utils.config_values import (  # used here, and imported from here by callers
    BOLNA_SENDER_IPS, DEFAULT_TAGS, ExtraField, window_hours)
from utils.config_tenants import DEFAULT_TENANT_FIELDS
from utils.phone import DEFAULT_REGION


class ConfigError(ValueError):
    """One bad setting; the message names the variable and never contains its value if secret."""


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
    # A scheduled job running this long without progress stops the systemd watchdog (worker/systemd.py).
    job_deadline_seconds: float = 3600.0
    # On SIGTERM/SIGINT/SIGHUP the running job has this long to finish its write; then exit 1.
    shutdown_grace_seconds: float = 30.0
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
    webhook_max_waiting: int = 5000  # an account's deliveries waiting at once; beyond it, 429
    # Bolna's documented limits per organisation (services/bolna_pacing.py), and the share left unused.
    bolna_listing_rate_per_minute: int = 500
    bolna_rate_per_minute: int = 1000
    bolna_rate_headroom: float = 0.1
    bolna_fetch_concurrency: int = 8   # full records (GET /executions/{id}) in flight at once
    # A full record fetched for one job, kept for the other (services/record_cache.py).
    bolna_record_cache_size: int = 10000
    bolna_record_cache_seconds: int = 1800
    # Many accounts (services/tenancy): `env` serves the one account of BOLNA_API_KEY; `mongodb`
    # reads the accounts and their keys from `tenants_collection`.
    tenant_source: str = "env"
    tenants_collection: str = "users"
    tenants_filter: Mapping[str, object] | None = None  # None: see tenants_query
    tenant_fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TENANT_FIELDS))
    # Fernet key(s) the stored keys are encrypted with; None: they are stored as plain text.
    tenant_keys_secret: str | None = field(default=None, repr=False)
    # Many accounts across replicas (worker/fleet.py): the lease a replica holds on an account it
    # syncs (renewed every third of it; an account of a dead replica is taken over after it), how
    # often each replica looks for due accounts, how many it syncs at once, how often the account
    # list is re-read, and the ceiling on LLM analyses per sync interval across all accounts.
    tenant_lease_seconds: int = 120
    tenant_poll_seconds: int = 5
    tenant_concurrency: int = 4
    tenant_refresh_seconds: int = 60
    llm_global_limit: int | None = None

    @property
    def llm_batch_api_window_seconds(self) -> int:
        return window_hours(self.llm_batch_api_window) * 3600

    @property
    def llm_requests_per_run(self) -> int:
        """HTTP requests to the LLM a run may make, retries included: twice the batch limit unless
        set, so a 429 storm or an outage costs a bounded number of requests."""
        return self.llm_request_budget if self.llm_request_budget is not None else 2 * self.llm_batch_limit

    @property
    def tenants_query(self) -> Mapping[str, object]:
        """The accounts' filter: TENANTS_FILTER, else the default, derived here rather than stored
        so it follows TENANT_FIELDS' key path however the settings were built."""
        if self.tenants_filter is not None:
            return self.tenants_filter
        return tenants.default_tenants_filter(self.tenant_fields["bolnaApiKey"])

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


# variable -> (settings attribute, parser, secret)
_VARIABLES: dict[str, tuple[str, Callable[[str], object], bool]] = {
    "MONGODB_URI": ("mongodb_uri", values.mongo_uri, True),  # may hold a password
    "MONGODB_DB": ("mongodb_db", values.stripped, False),
    "BOLNA_API_KEY": ("bolna_api_key", values.stripped, True),
    "BOLNA_BASE_URL": ("bolna_base_url", values.url, False),
    "BOLNA_AGENT_IDS": ("bolna_agent_ids", values.csv, False),
    "BOLNA_PAGE_SIZE": ("bolna_page_size", values.positive_int, False),
    "HTTP_TIMEOUT_SECONDS": ("http_timeout_seconds", values.positive_float, False),
    "HTTP_MAX_ATTEMPTS": ("http_max_attempts", values.positive_int, False),
    "HTTP_BACKOFF_SECONDS": ("http_backoff_seconds", values.positive_float, False),
    "BACKFILL_DAYS": ("backfill_days", values.positive_int, False),
    "SYNC_OVERLAP_MINUTES": ("sync_overlap_minutes", values.non_negative_int, False),
    "GROQ_API_KEY": ("groq_api_keys", values.csv, True),
    "GROQ_MODEL": ("groq_model", values.stripped, False),
    "GROQ_BASE_URL": ("groq_base_url", values.url, False),
    "GROQ_ANSWER_FORMAT": ("groq_answer_format", values.answer_format, False),
    "GROQ_REASONING_EFFORT": ("groq_reasoning_effort", values.reasoning_effort, False),
    "SYNC_INTERVAL_MINUTES": ("sync_interval_minutes", values.positive_int, False),
    "LLM_BATCH_LIMIT": ("llm_batch_limit", values.non_negative_int, False),
    "LLM_CONCURRENCY": ("llm_concurrency", values.positive_int, False),
    "LLM_REQUEST_BUDGET": ("llm_request_budget", values.non_negative_int, False),
    "LLM_BATCH_DEADLINE_SECONDS": ("llm_batch_deadline_seconds", values.positive_float, False),
    "LLM_TIMEOUT_SECONDS": ("llm_timeout_seconds", values.positive_float, False),
    "LLM_PRICES": ("llm_prices", values.prices, False),
    "LLM_BATCH_MODE": ("llm_batch_mode", values.batch_mode, False),
    "LLM_BATCH_API_MAX_CALLS": ("llm_batch_api_max_calls", values.positive_int, False),
    "LLM_BATCH_API_WINDOW": ("llm_batch_api_window", values.completion_window, False),
    "LLM_BATCH_API_DISCOUNT": ("llm_batch_api_discount", values.fraction, False),
    "MIN_TRANSCRIPT_CHARS": ("min_transcript_chars", values.non_negative_int, False),
    "TRANSCRIPT_CHAR_BUDGET": ("transcript_char_budget", values.positive_int, False),
    "ANALYSIS_TAGS": ("analysis_tags", values.csv, False),
    "ANALYSIS_EXTRA_FIELDS": ("analysis_extra_fields", values.extra_fields, False),
    "DEFAULT_PHONE_REGION": ("default_phone_region", values.region, False),
    "STATUS_PRECEDENCE": ("status_precedence", values.precedence, False),
    "LOG_LEVEL": ("log_level", values.log_level, False),
    "LOG_FORMAT": ("log_format", values.log_format, False),
    "HEALTH_PORT": ("health_port", values.port, False),
    "HEALTH_HOST": ("health_host", values.stripped, False),
    "HEALTH_MAX_AGE_INTERVALS": ("health_max_age_intervals", values.positive_float, False),
    "JOB_DEADLINE_SECONDS": ("job_deadline_seconds", values.positive_float, False),
    "SHUTDOWN_GRACE_SECONDS": ("shutdown_grace_seconds", values.positive_float, False),
    "RUN_RETENTION_DAYS": ("run_retention_days", values.positive_int, False),
    "TRANSCRIPT_RETENTION_DAYS": ("transcript_retention_days", values.positive_int, False),
    "RECORD_RETENTION_DAYS": ("record_retention_days", values.positive_int, False),
    "PRIVACY_HASH_KEY": ("privacy_hash_key", values.hash_key, True),
    "AUTO_ASSIGN_MIN_CONFIDENCE": ("auto_assign_min_confidence", values.percentage, False),
    "WEBHOOK_PORT": ("webhook_port", values.port, False),
    "WEBHOOK_HOST": ("webhook_host", values.stripped, False),
    "WEBHOOK_TOKEN": ("webhook_token", values.webhook_token, True),
    "WEBHOOK_ALLOWED_IPS": ("webhook_allowed_ips", values.allowed_senders, False),
    "WEBHOOK_TRUSTED_PROXIES": ("webhook_trusted_proxies", values.networks, False),
    "WEBHOOK_MAX_BODY_BYTES": ("webhook_max_body_bytes", values.positive_int, False),
    "WEBHOOK_PUBLIC_URL": ("webhook_public_url", values.url, False),
    "WEBHOOK_INBOX_DAYS": ("webhook_inbox_days", values.positive_int, False),
    "WEBHOOK_MAX_WAITING": ("webhook_max_waiting", values.positive_int, False),
    "BOLNA_LISTING_RATE_PER_MINUTE": ("bolna_listing_rate_per_minute", values.positive_int, False),
    "BOLNA_RATE_PER_MINUTE": ("bolna_rate_per_minute", values.positive_int, False),
    "BOLNA_RATE_HEADROOM": ("bolna_rate_headroom", values.fraction, False),
    "BOLNA_FETCH_CONCURRENCY": ("bolna_fetch_concurrency", values.positive_int, False),
    "BOLNA_RECORD_CACHE_SIZE": ("bolna_record_cache_size", values.non_negative_int, False),
    "BOLNA_RECORD_CACHE_SECONDS": ("bolna_record_cache_seconds", values.non_negative_int, False),
    "TENANT_SOURCE": ("tenant_source", tenants.tenant_source, False),
    "TENANTS_COLLECTION": ("tenants_collection", tenants.collection_name, False),
    "TENANTS_FILTER": ("tenants_filter", values.json_object, False),
    "TENANT_FIELDS": ("tenant_fields", tenants.tenant_fields, False),
    "TENANT_KEYS_SECRET": ("tenant_keys_secret", tenants.fernet_secret, True),
    "TENANT_LEASE_SECONDS": ("tenant_lease_seconds", tenants.lease_seconds, False),
    "TENANT_POLL_SECONDS": ("tenant_poll_seconds", values.positive_int, False),
    "TENANT_CONCURRENCY": ("tenant_concurrency", values.positive_int, False),
    "TENANT_REFRESH_SECONDS": ("tenant_refresh_seconds", values.positive_int, False),
    "LLM_GLOBAL_LIMIT": ("llm_global_limit", values.non_negative_int, False),
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
