"""`--account ID` of the CLI with many accounts: the id as the accounts collection stores it."""
from __future__ import annotations

from bson import ObjectId
from pymongo.collection import Collection


class AccountNotFound(LookupError):
    pass


def find_account(accounts: Collection, text: str) -> object:
    """The stored `_id` the text names: an ObjectId when it is one's 24 hex digits and such an
    account exists (a CRM written in JavaScript stores those), else the text itself."""
    candidates = ([ObjectId(text)] if ObjectId.is_valid(text) else []) + [text]
    for candidate in candidates:
        if accounts.find_one({"_id": candidate}, {"_id": 1}) is not None:
            return candidate
    raise AccountNotFound(f"no account {text!r} in the {accounts.name!r} collection")
