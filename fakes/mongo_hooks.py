"""A Database stand-in that calls a hook before every collection operation.

Benchmarks count MongoDB round trips with it on mongomock (which has no command monitoring), and
fault tests make a chosen write fail or "crash the process". It is handed to `Runtime(settings,
db)` like a real Database: the code under test cannot tell the difference.

mongomock runs `find_one_and_update` and bulk writes as several steps without a lock, so two
threads can both claim one document — something a real server's single-document atomicity
forbids (the analyzer's parallel claims then take one call twice). So every wrapper runs each
operation whole under one lock, as a server would: tests then test the code, not mongomock.

mongomock 4.3.0 (its latest release) also stopped following the driver at pymongo 4.11, whose
UpdateOne and ReplaceOne hand a `sort` argument to the bulk builder that mongomock's builder does
not take. The driver is not held back for it: the wrapper hands mongomock's builder the
operations without an unset `sort` (`_SortlessBulk`), and refuses a set one, which mongomock
could not honour. Likewise a `hint` (which mongomock's find and updates refuse): mongomock has no
planner to steer, so the wrapper checks that the hint names an existing index, as a server does,
and drops it.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Callable

import mongomock
import pymongo
import pymongo.errors

import fakes.mongomock_extensions  # noqa: F401 - what mongomock lacks, taught to it before any use

WRITE_METHODS = frozenset({
    "bulk_write", "insert_one", "insert_many", "update_one", "update_many", "replace_one",
    "find_one_and_update", "find_one_and_replace", "find_one_and_delete", "delete_one", "delete_many",
    "create_index", "create_indexes", "drop_index",
})
READ_METHODS = frozenset({
    "find", "find_one", "count_documents", "estimated_document_count", "aggregate", "distinct",
})
# One call is one round trip, except a `find` whose result outgrows the first batch (101
# documents on a real server), which costs getMores too; mongomock has no batches to count.
ROUND_TRIP_METHODS = WRITE_METHODS | READ_METHODS

Hook = Callable[[str, str], None]  # (collection name, method name)

# One for the process: wrappers of one mongomock client must share it, and serializing
# operations on different clients costs nothing worth a finer lock.
ONE_OPERATION_AT_A_TIME = threading.RLock()


def no_hook(collection: str, method: str) -> None:
    pass


class HookedDatabase:
    def __init__(self, db, hook: Hook = no_hook, lock: threading.RLock | None = ONE_OPERATION_AT_A_TIME):
        """`lock=None` for a real server, which needs no help to be atomic."""
        self._db = db
        self._hook = hook
        self._lock = lock

    def __getitem__(self, name: str) -> "HookedCollection":
        return HookedCollection(self._db[name], self._hook, self._lock)

    def get_collection(self, name: str, **options) -> "HookedCollection":
        return HookedCollection(self._db.get_collection(name, **options), self._hook, self._lock)

    def __getattr__(self, name: str):
        attribute = getattr(self._db, name)  # name, client, list_collection_names... or `db.calls`
        if hasattr(attribute, "bulk_write"):
            return HookedCollection(attribute, self._hook, self._lock)
        return attribute


class _SortlessBulk:
    """mongomock's BulkOperationBuilder as pymongo >= 4.11 calls it: `sort=None` is dropped (it is
    what the builder did anyway); a bulk update with a sort is refused rather than run unsorted. A
    `hint` is checked against the collection's indexes, as a server does, and dropped."""

    def __init__(self, bulk):
        self._bulk = bulk

    def __getattr__(self, name: str):
        return getattr(self._bulk, name)

    def add_update(self, *args, sort=None, hint=None, **kwargs):
        _refuse_sort(sort)
        self._check(hint)
        return self._bulk.add_update(*args, **kwargs)

    def add_replace(self, *args, sort=None, hint=None, **kwargs):
        _refuse_sort(sort)
        self._check(hint)
        return self._bulk.add_replace(*args, **kwargs)

    def add_delete(self, *args, hint=None, **kwargs):
        self._check(hint)
        return self._bulk.add_delete(*args, **kwargs)

    def _check(self, hint) -> None:
        if hint is not None:
            _check_hint(self._bulk.collection, hint)


def _refuse_sort(sort) -> None:
    if sort is not None:
        raise NotImplementedError("mongomock cannot apply `sort` in a bulk write; run this on a server")


class _SortlessOperation:
    """A pymongo write operation that adds itself to mongomock's builder through `_SortlessBulk`."""

    def __init__(self, operation):
        self._operation = operation

    def _add_to_bulk(self, bulk) -> None:
        self._operation._add_to_bulk(_SortlessBulk(bulk))


def _check_hint(collection, hint) -> None:
    """A server refuses a hint that names no index (by name or by keys); so does this."""
    indexes = collection.index_information()
    # By name, by a list of (key, direction), or as the document an operation's `hint=` becomes.
    pairs = hint.items() if isinstance(hint, Mapping) else hint
    keys = [tuple(pair) for pair in pairs] if not isinstance(hint, str) else None
    if keys == [("_id", 1)] or hint == "_id_":
        return  # every collection has `_id_`, one not created yet too (a server builds it with the collection)
    if (keys is None and hint in indexes) or any([tuple(pair) for pair in index["key"]] == keys for index in indexes.values()):
        return
    raise pymongo.errors.OperationFailure("hint provided does not correspond to an existing index", code=2)


def _mongomock_bulk_write(collection):
    def bulk_write(requests, *args, **kwargs):
        return collection.bulk_write([_SortlessOperation(op) for op in requests], *args, **kwargs)
    return bulk_write


class HookedCollection:
    def __init__(self, collection, hook: Hook, lock: threading.RLock | None):
        self._collection = collection
        self._hook = hook
        self._lock = lock

    def __getattr__(self, name: str):
        attribute = getattr(self._collection, name)
        if name not in ROUND_TRIP_METHODS:
            return attribute
        if name == "bulk_write" and isinstance(self._collection, mongomock.Collection):
            attribute = _mongomock_bulk_write(self._collection)

        def operation(*args, **kwargs):
            if kwargs.get("hint") is not None and isinstance(self._collection, mongomock.Collection):
                _check_hint(self._collection, kwargs.pop("hint"))
            self._hook(self._collection.name, name)
            if self._lock is None:
                return attribute(*args, **kwargs)
            with self._lock:
                return attribute(*args, **kwargs)

        return operation


class RoundTripCounter:
    """A hook that counts operations, per method and in total."""

    def __init__(self):
        self.by_method: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, collection: str, method: str) -> None:
        with self._lock:
            self.by_method[method] += 1

    @property
    def total(self) -> int:
        return sum(self.by_method.values())

    def reset(self) -> None:
        self.by_method.clear()


class WriteTrap:
    """A hook that lets `after` writes through once armed, then raises `error()` on the next one.

    Fires once: an AutoReconnect stands for a failover blip, a KeyboardInterrupt for the end of
    the process (whatever ran after it in that process is gone anyway)."""

    def __init__(self):
        self.writes = 0  # every write seen, armed or not
        self.fired_at: str | None = None  # "collection.method" of the write it failed
        self._remaining: int | None = None
        self._error: Callable[[], BaseException] | None = None

    def arm(self, after: int, error: Callable[[], BaseException]) -> None:
        self._remaining, self._error, self.fired_at = after, error, None

    def disarm(self) -> None:
        """Lets every further write through; `fired_at` stays as it is."""
        self._remaining = None

    def __call__(self, collection: str, method: str) -> None:
        if method not in WRITE_METHODS:
            return
        self.writes += 1
        if self._remaining is None:
            return
        if self._remaining == 0:
            self._remaining, self.fired_at = None, f"{collection}.{method}"
            raise self._error()
        self._remaining -= 1


class HookedClient:
    """A mongomock client whose databases are HookedDatabases: hand it to `Runtime.build` (and use it
    in tests and the demo) wherever several threads share one in-memory database."""

    def __init__(self, client=None, hook: Hook = no_hook):
        self._client = client if client is not None else mongomock.MongoClient()
        self._hook = hook
        # A real server is atomic on its own; serializing it would hide what the tests check.
        self._lock = None if isinstance(client, pymongo.MongoClient) else ONE_OPERATION_AT_A_TIME

    def __getitem__(self, name: str) -> HookedDatabase:
        return HookedDatabase(self._client[name], self._hook, self._lock)

    def get_database(self, name: str, **options) -> HookedDatabase:
        return HookedDatabase(self._client.get_database(name, **options), self._hook, self._lock)

    def close(self) -> None:
        self._client.close()
