"""The keyed hash (HMAC-SHA256) that stands for an erased number: the suppression list and the
erasure records hold it, never the number. Without the key, a hash cannot be checked against a
guessed number, so a copy of the database does not tell who asked to be forgotten."""
from __future__ import annotations

import hashlib
import hmac

from utils.config import ConfigError

# Hashed with the key to tell, at start-up, whether the configured key is the one the suppression
# list was written with: a changed key would make every stored hash miss, silently.
_KEY_CHECK = b"callsync privacy key check"


class PrivacyKeyError(ConfigError):
    """PRIVACY_HASH_KEY is missing, or not the key the suppression list was written with."""


class PhoneHasher:
    def __init__(self, key: str):
        self._key = key.encode()
        self.key_id = hmac.new(self._key, _KEY_CHECK, hashlib.sha256).hexdigest()[:16]

    def digest(self, phone_key: str) -> str:
        """The hash of a number's stored key (E.164, or the text of an invalid number)."""
        return hmac.new(self._key, phone_key.encode(), hashlib.sha256).hexdigest()


def hasher_for(key: str | None) -> PhoneHasher | None:
    return PhoneHasher(key) if key else None


def require_hasher(hasher: PhoneHasher | None) -> PhoneHasher:
    if hasher is None:
        raise PrivacyKeyError("PRIVACY_HASH_KEY is not set: erasure records and the suppression list hold "
                              "a keyed hash of the number, never the number. Set it to a random secret "
                              "(e.g. `openssl rand -hex 32`) and keep it: see docs/privacy.md.")
    return hasher
