"""Parsers of the many-accounts settings (TENANT_*, services/tenancy), beside the other setting
values' (utils/config_values.py)."""
from __future__ import annotations

from cryptography.fernet import Fernet

from utils.config_values import csv, int_at_least, json_object, one_of

# Many accounts (services/tenancy): where each setting of an account is read in its document.
# The names are the daemon's; the paths (dotted for nested fields) are the CRM's, overridable.
DEFAULT_TENANT_FIELDS = {
    "bolnaApiKey": "bolnaApiKey",
    "agentIds": "bolnaAgentIds",
    "groqApiKey": "groqApiKey",
    "phoneRegion": "phoneRegion",
    "llmBatchLimit": "callsync.llmBatchLimit",
    "bolnaRequestsPerMinute": "callsync.bolnaRequestsPerMinute",
}
ACTIVE_SUBSCRIPTIONS = ("active", "trial")


def default_tenants_filter(key_path: str) -> dict[str, object]:
    """The accounts served unless TENANTS_FILTER says otherwise: those with a Bolna key (wherever
    TENANT_FIELDS puts it) and an active or trial subscription."""
    return {key_path: {"$nin": [None, ""]}, "subscription.status": {"$in": list(ACTIVE_SUBSCRIPTIONS)}}


tenant_source = one_of("env", "mongodb",
                       explained="env (one account, from BOLNA_API_KEY) or mongodb (the accounts collection)")


def collection_name(value: str) -> str:
    name = value.strip()
    if "$" in name or "\0" in name or name.startswith("system.") or name.startswith(".") or name.endswith("."):
        raise ValueError("must be a MongoDB collection name (no '$', not system.*)")
    return name


def tenant_fields(value: str) -> dict[str, str]:
    """JSON object of the daemon's name -> the CRM's field path, over DEFAULT_TENANT_FIELDS; e.g.
    {"bolnaApiKey": "integrations.bolna.key"}. A misspelt name would silently keep the default, so
    it is refused."""
    overrides = json_object(value)
    unknown = sorted(set(overrides) - set(DEFAULT_TENANT_FIELDS))
    if unknown:
        raise ValueError(f"unknown field name(s) {', '.join(map(repr, unknown))}: "
                         f"the names are {', '.join(DEFAULT_TENANT_FIELDS)}")
    for name, path in overrides.items():
        if (not isinstance(path, str) or not path.strip() or path.startswith("$")
                or not all(part.strip() for part in path.split("."))):
            raise ValueError(f"the path of {name!r} must be a field name, dotted for a nested field (a.b)")
    return {**DEFAULT_TENANT_FIELDS, **{name: path.strip() for name, path in overrides.items()}}


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


def fernet_secret(value: str) -> str:
    return ",".join(fernet_keys(value))


MIN_LEASE_SECONDS = 15


def lease_seconds(value: str) -> int:
    """Renewed every third of it: much shorter, and a slow MongoDB round trip would lose it."""
    return int_at_least(value, MIN_LEASE_SECONDS)
