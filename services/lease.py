"""Leases: a document taken by one worker until a time, in every collection that has them
(analysis claims on `calls`, `webhook_inbox`, `tenant_schedule`), under the names APScheduler 4's
MongoDB data store gives them:

    acquired_by      who holds it (host:pid:random), shown in status
    acquired_until   when the lease ends, by the holder's `clock`: the database server's where
                     replicas share the documents (services/server_clock.py), so a replica whose
                     clock is fast cannot take a live lease
    acquired_token   this acquisition's own token, named in the filter of every later write of the
                     holder: a holder whose lease expired and was taken over writes nothing

A live holder finishes, renews or releases well within its lease; a lease past `acquired_until`
belongs to a worker that died, and the document may be taken again.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from pymongo.collection import Collection

BY, UNTIL, TOKEN = "acquired_by", "acquired_until", "acquired_token"
# The `$unset` that ends a lease.
RELEASED = {BY: "", UNTIL: "", TOKEN: ""}


def new_token() -> str:
    return uuid.uuid4().hex


def free(now: datetime) -> dict:
    """The filter of documents no live lease holds (never taken, released, or expired)."""
    return {"$or": [{UNTIL: None}, {UNTIL: {"$lte": now}}]}


def taken(owner: str, token: str, until: datetime) -> dict:
    """The `$set` that takes a document until `until`."""
    return {BY: owner, UNTIL: until, TOKEN: token}


def migrate(collection: Collection, old: str, old_until: str, within: dict, hint=None) -> None:
    """Leases stored in an earlier shape (`{<old>: {owner, token, <old_until>, ...}}`) rewritten in
    these names, in one update; idempotent (none is left after it). `within`: where such leases can
    be (the documents waiting to be taken), with the `hint` of its index, so start-up walks no more."""
    collection.update_many({**within, old: {"$exists": True}}, [
        {"$set": {BY: f"${old}.owner", UNTIL: f"${old}.{old_until}", TOKEN: f"${old}.token"}},
        {"$unset": old}], hint=hint)
