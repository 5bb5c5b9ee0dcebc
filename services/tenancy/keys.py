"""The accounts' stored API keys made plain: Fernet tokens decrypted with TENANT_KEYS_SECRET, or
plain text when no secret is set.

TENANT_KEYS_SECRET holds one Fernet key, or several comma-separated while rotating: the first
encrypts, every one decrypts. To rotate, put the new key first and keep the old one after it
until every stored key is re-encrypted with the new one (`MultiFernet.rotate`), then drop it."""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services.tenancy.tenant import UnusableTenant
from utils.config import ConfigError, fernet_keys

# Every Fernet token starts so: version byte 0x80, then a 64-bit timestamp whose high bytes are
# zero until the year 4147, base64url-encoded. A plain Bolna or Groq key never does.
TOKEN_PREFIX = "gAAAAA"


class KeyReader:
    def __init__(self, fernet: MultiFernet | None):
        self._fernet = fernet

    @classmethod
    def from_secret(cls, secret: str | None) -> "KeyReader":
        """Checked at start-up: a bad secret would otherwise skip every account, run after run."""
        if not secret:
            return cls(None)
        try:
            parts = fernet_keys(secret)
        except ValueError as exc:
            raise ConfigError(f"TENANT_KEYS_SECRET is invalid: {exc}") from None
        return cls(MultiFernet([Fernet(part) for part in parts]))

    def encrypt(self, plain: str) -> str:
        """A key as it is to be stored (with the secret's first key)."""
        if self._fernet is None:
            raise ConfigError("TENANT_KEYS_SECRET is not set: there is nothing to encrypt with")
        return self._fernet.encrypt(plain.encode()).decode()

    def plain(self, stored: str, *, tenant_id: object, field: str) -> str:
        """The usable key, stripped; UnusableTenant (naming the tenant and the field, never the
        value) when it cannot be had."""
        if self._fernet is None:
            if stored.strip().startswith(TOKEN_PREFIX):
                # Sending a token to Bolna as a key would only earn 401s, and a secret forgotten
                # in the deployment is the likely cause, so it is said here.
                raise UnusableTenant(tenant_id, f"{field} looks encrypted but TENANT_KEYS_SECRET is not set")
            key = stored.strip()
        else:
            try:
                key = self._fernet.decrypt(stored.strip()).decode("utf-8").strip()
            except (InvalidToken, ValueError, TypeError):
                # ValueError: text that is not even base64, or a plaintext that is not UTF-8.
                raise UnusableTenant(tenant_id, f"{field} does not decrypt with TENANT_KEYS_SECRET (encrypted "
                                                "with another key, or stored unencrypted)") from None
        if not key:
            raise UnusableTenant(tenant_id, f"{field} is empty")
        return key
