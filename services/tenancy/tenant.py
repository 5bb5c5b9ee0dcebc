"""One account the daemon serves: its id (written as `userId` on every record it owns) and the keys
and limits it runs with."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from utils.config import ConfigError, Settings


@dataclass(frozen=True)
class Tenant:
    id: object  # the account document's _id (ObjectId or str); None in single-account mode
    bolna_api_key: str = field(repr=False)
    agent_ids: tuple[str, ...] = ()  # empty: every agent of the account
    groq_api_key: str | None = field(default=None, repr=False)  # None: the daemon's GROQ_API_KEY
    phone_region: str | None = None  # None: DEFAULT_PHONE_REGION
    llm_batch_limit: int | None = None  # LLM calls per run; None: LLM_CALLS_PER_RUN
    bolna_requests_per_minute: int | None = None  # None: Bolna's documented limit

    @classmethod
    def from_settings(cls, settings: Settings) -> "Tenant":
        """Single-account mode (TENANT_SOURCE=env): the account of BOLNA_API_KEY, nothing overridden."""
        if not settings.bolna_api_key:
            raise ConfigError("BOLNA_API_KEY is not set: TENANT_SOURCE=env serves the account of that key")
        return cls(id=None, bolna_api_key=settings.bolna_api_key, agent_ids=settings.bolna_agent_ids)

    @property
    def key_fingerprint(self) -> str:
        """Lets the daemon notice that an account's key changed (its pace, its cached records
        belong to the old key) without keeping the key. 64 bits of a hash of a random API key
        reveal nothing usable about it."""
        return hashlib.sha256(self.bolna_api_key.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """What logs may show: the id (not a secret), never a key."""
        return "env" if self.id is None else str(self.id)


class UnusableTenant(ValueError):
    """An account document the daemon cannot serve; the reason names fields, never their values
    when they are keys."""

    def __init__(self, tenant_id: object, reason: str):
        super().__init__(f"tenant {tenant_id}: {reason}")
        self.tenant_id = tenant_id
        self.reason = reason
