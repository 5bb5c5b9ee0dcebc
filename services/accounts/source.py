"""The accounts to serve with ACCOUNT_SOURCE=mongodb: those of the CRM's accounts collection, each
mapped through the field map (ACCOUNT_FIELDS) and checked value by value, its keys made plain
(README, "Encrypted keys"). An account that cannot be served is skipped whole and reported, with
its reason, and never keeps the others from running. (The one account of BOLNA_API_KEY needs no
source: worker/app.py, `Runtime`.)"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

from bson import ObjectId
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pymongo.database import Database

from services.accounts.scoped import account_id_problem
from utils.config import ConfigError, Settings, fernet_keys
from utils.config import region as parse_region

log = logging.getLogger(__name__)

# Every Fernet token starts so: version byte 0x80, then a 64-bit timestamp whose high bytes are
# zero until the year 4147, base64url-encoded. A plain Bolna or Groq key never does.
TOKEN_PREFIX = "gAAAAA"
_COPY = "_id is a string that spells another account's ObjectId: their records' ids would be one"


@dataclass(frozen=True)
class Account:
    """One account the daemon serves: its id (written as `userId` on every record it owns) and the
    keys and limits it runs with."""
    id: object  # the account document's _id (ObjectId or str)
    bolna_api_key: str = field(repr=False)
    agent_ids: tuple[str, ...] = ()  # empty: every agent of the account
    groq_api_key: str | None = field(default=None, repr=False)  # None: the daemon's GROQ_API_KEY
    phone_region: str | None = None  # None: DEFAULT_PHONE_REGION
    llm_batch_limit: int | None = None  # LLM calls per run; None: LLM_CALLS_PER_RUN
    bolna_requests_per_minute: int | None = None  # None: Bolna's documented limit

    @property
    def key_fingerprint(self) -> str:
        """Lets the daemon notice that an account's key changed (its pace, its cached records
        belong to the old key) without keeping the key. 64 bits of a hash of a random API key
        reveal nothing usable about it."""
        return hashlib.sha256(self.bolna_api_key.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """What logs may show: the id (not a secret), never a key."""
        return str(self.id)


class UnusableAccount(ValueError):
    """An account document the daemon cannot serve; the reason names fields, never their values
    when they are keys."""

    def __init__(self, account_id: object, reason: str):
        super().__init__(f"account {account_id}: {reason}")
        self.account_id = account_id
        self.reason = reason


@dataclass(frozen=True)
class AccountList:
    accounts: tuple[Account, ...]
    skipped: tuple[UnusableAccount, ...] = ()


class KeyReader:
    def __init__(self, fernet: MultiFernet | None):
        self._fernet = fernet

    @classmethod
    def from_secret(cls, secret: str | None) -> "KeyReader":
        """Checked at start-up (AccountSource): a bad secret would otherwise skip every account, run
        after run."""
        if not secret:
            return cls(None)
        try:
            parts = fernet_keys(secret)
        except ValueError as exc:
            raise ConfigError(f"ACCOUNT_KEYS_SECRET is invalid: {exc}") from None
        return cls(MultiFernet([Fernet(part) for part in parts]))

    def encrypt(self, plain: str) -> str:
        """A key as it is to be stored (with the secret's first key)."""
        if self._fernet is None:
            raise ConfigError("ACCOUNT_KEYS_SECRET is not set: there is nothing to encrypt with")
        return self._fernet.encrypt(plain.encode()).decode()

    def plain(self, stored: object) -> str | None:
        """The usable key, stripped; None when blank; ValueError (saying what is wrong, never the
        value) when it cannot be had."""
        if not isinstance(stored, str):
            raise ValueError("is not a string")
        stored = stored.strip()
        if self._fernet is None or not stored:
            if stored.startswith(TOKEN_PREFIX):
                # Sending a token to Bolna as a key would only earn 401s, and a secret forgotten
                # in the deployment is the likely cause, so it is said here.
                raise ValueError("looks encrypted but ACCOUNT_KEYS_SECRET is not set")
            return stored or None
        try:
            key = self._fernet.decrypt(stored).decode("utf-8").strip()
        except (InvalidToken, ValueError, TypeError):
            # ValueError: text that is not even base64, or a plaintext that is not UTF-8.
            raise ValueError("does not decrypt with ACCOUNT_KEYS_SECRET (encrypted with another key, or "
                             "stored unencrypted)") from None
        if not key:
            raise ValueError("is empty")
        return key


class AccountSource:
    def __init__(self, settings: Settings, db: Database):
        self._settings = settings
        self._keys = KeyReader.from_secret(settings.account_keys_secret)
        self._collection = db[settings.accounts_collection]

    def load(self) -> AccountList:
        """The accounts as they are now; called again to follow the CRM's changes."""
        return self._read(self._settings.accounts_query)

    def find(self, account_id: object) -> Account | None:
        """The account `account_id` when ACCOUNTS_FILTER lists it (else None); UnusableAccount, with
        the reason, when it is listed but cannot be served."""
        listed = self._read({"$and": [self._settings.accounts_query, {"_id": account_id}]})
        if listed.skipped:
            raise listed.skipped[0]
        return listed.accounts[0] if listed.accounts else None

    def _read(self, query: dict) -> AccountList:
        fields = self._settings.account_fields
        accounts: list[Account] = []
        skipped: list[UnusableAccount] = []
        for document in self._collection.find(query, projection=projection(fields), sort=[("_id", 1)]):
            try:
                accounts.append(account_from_document(document, fields, self._keys))
            except UnusableAccount as exc:
                skipped.append(exc)
        # A string id that spells another account's ObjectId: the ids of its records (`local_id`)
        # and its webhook token would be that account's.
        spelled = {ObjectId(t.id): t.id for t in accounts
                   if isinstance(t.id, str) and ObjectId.is_valid(t.id) and str(ObjectId(t.id)) == t.id}
        copies = set()
        if spelled:
            copies = {spelled[d["_id"]] for d in self._collection.find({"_id": {"$in": list(spelled)}}, {"_id": 1})}
        skipped += [UnusableAccount(account.id, _COPY) for account in accounts if account.id in copies]
        for exc in skipped:
            log.warning("account %s skipped: %s", exc.account_id, exc.reason, extra={"event": "account_skipped"})
        return AccountList(tuple(t for t in accounts if t.id not in copies), tuple(skipped))


def read_path(document: Mapping, path: str) -> object:
    """The value at a dotted path, or None when any step is missing or not an object (a list on
    the way is not fanned out as a query would: an account has one value per setting)."""
    value: object = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def projection(fields: Mapping[str, str]) -> dict[str, int]:
    """Only the mapped fields are read (the documents are the CRM's users: they hold far more).
    A path inside another projected one is dropped, since MongoDB refuses the pair as a path
    collision."""
    paths = set(fields.values())
    kept = [path for path in paths
            if not any(path.startswith(other + ".") for other in paths if other != path)]
    return {path: 1 for path in sorted(kept)}


def account_from_document(document: Mapping, fields: Mapping[str, str], keys: KeyReader) -> Account:
    account_id = document["_id"]
    if (problem := account_id_problem(account_id)) is not None:
        raise UnusableAccount(account_id, problem)

    def read(name: str, parse: Callable[[object], object], *, required: bool = False):
        """The field's value by `parse` (None: absent), or UnusableAccount with the ValueError's reason."""
        path = fields[name]
        value = read_path(document, path)
        try:
            parsed = None if value is None else parse(value)
        except ValueError as exc:
            raise UnusableAccount(account_id, f"{path} {exc}") from None
        if parsed is None and required:
            raise UnusableAccount(account_id, f"{path} is missing or empty")
        return parsed

    return Account(
        id=account_id,
        bolna_api_key=read("bolnaApiKey", keys.plain, required=True),
        agent_ids=read("agentIds", _agent_ids) or (),
        groq_api_key=read("groqApiKey", keys.plain),
        phone_region=read("phoneRegion", _region),
        llm_batch_limit=read("llmBatchLimit", _positive_int),
        bolna_requests_per_minute=read("bolnaRequestsPerMinute", _positive_int),
    )


def _agent_ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError("must be a list of agent ids (non-empty strings)")
    return tuple(dict.fromkeys(item.strip() for item in value))


def _region(value: object) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a region code such as IN or US")
    try:
        return parse_region(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (got {value!r})") from None


def _positive_int(value: object) -> int:
    # A CRM in JavaScript stores every number as a double: 20.0 is the 20 it meant.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number of at least 1 (got {value!r})")
    return value
