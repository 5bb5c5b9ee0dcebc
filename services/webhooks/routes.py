"""Which account a webhook delivery is for: the token in its URL says.

Single-account mode has one token, WEBHOOK_TOKEN. With many accounts (TENANT_SOURCE=mongodb)
each account has its own, derived from WEBHOOK_TOKEN and the account's id:

    token = HMAC-SHA256(key=WEBHOOK_TOKEN, message=str(account id)), in hex

so no token is stored anywhere, a CRM front end holding the secret can show each account its
URL, and one account's URL tells nothing of another's.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Callable, Iterable

from services.webhooks.inbox import Inbox


_UNLISTED = object()


def account_token(secret: str, tenant_id: object) -> str:
    return hmac.new(secret.encode(), str(tenant_id).encode(), hashlib.sha256).hexdigest()


def _path_bytes(token: str) -> bytes:
    return token.encode("utf-8", "surrogateescape")  # WSGI paths are latin-1 text of raw bytes


class SingleRoute:
    """The one account of the environment, behind WEBHOOK_TOKEN."""

    def __init__(self, token: str, inbox: Inbox):
        self._token = _path_bytes(token)
        self._inbox = inbox

    def inbox_for(self, token: str) -> Inbox | None:
        # Constant time, so the answer's timing tells nothing about how much of a guess was right.
        return self._inbox if hmac.compare_digest(_path_bytes(token), self._token) else None


class AccountRoutes:
    """Every listed account's token, leading to that account's inbox. The map is replaced whole
    when the accounts are read again (`update`): an account that joins gets its URL then, one that
    leaves loses it."""

    def __init__(self, secret: str, inbox_of: Callable[[object], Inbox]):
        self._secret = secret
        self._inbox_of = inbox_of
        self._accounts: dict[bytes, object] = {}

    def update(self, tenant_ids: Iterable[object]) -> None:
        self._accounts = {_digest(account_token(self._secret, tenant_id)): tenant_id for tenant_id in tenant_ids}

    def inbox_for(self, token: str) -> Inbox | None:
        # Looked up by a digest of the token: how long a lookup takes depends on the digest, which
        # tells a guesser nothing about the token.
        tenant_id = self._accounts.get(_digest(token), _UNLISTED)
        return None if tenant_id is _UNLISTED else self._inbox_of(tenant_id)


def _digest(token: str) -> bytes:
    return hashlib.sha256(_path_bytes(token)).digest()
