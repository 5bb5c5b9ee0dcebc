"""One account's view of the database: every read and write of a tenant's collection is confined
to documents whose `userId` is the tenant's, and every document written carries it.

The whole daemon runs on this view (the composition root hands it out), so scoping is not a
condition each query must remember: a filter gets `userId` added, an insert or a replacement gets
it stamped, an upsert inherits it from the filter (MongoDB copies a filter's equalities into the
document it inserts), and an aggregation starts by matching it. An operation that names another
account's id, or that would change `userId`, raises `TenantScopeError` before it reaches the
server. Single-account mode is the tenant `None`: `{userId: null}` also matches documents without
the field, so a database written before accounts existed is that tenant's, unchanged.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

TENANT_FIELD = "userId"

# The operations that read or write documents are wrapped below; the others a collection offers
# that touch documents, or hand out an unscoped copy of the collection, are refused.
_REFUSED_METHODS = frozenset({
    "estimated_document_count", "watch", "find_raw_batches", "aggregate_raw_batches", "rename", "drop",
    "find_one_and_replace", "with_options",
})
# Aggregation stages that read other collections, or write, outside the scope of the `$match`.
_ESCAPING_STAGES = frozenset({"$lookup", "$graphLookup", "$unionWith", "$out", "$merge", "$documents"})
# Update-pipeline stages that could drop or replace `userId`.
_REPLACING_STAGES = frozenset({"$replaceWith", "$replaceRoot"})


class TenantScopeError(RuntimeError):
    """An operation that would read or write outside its account."""


class TenantDatabase:
    """A database as one tenant sees it: the collections named in `scoped` are scoped to the
    tenant; the others (the account list, the tenant schedule) are the database's own."""

    def __init__(self, db, tenant_id: Any, scoped: Iterable[str]):
        self._db = db
        self.tenant_id = tenant_id
        self._scoped = frozenset(scoped)

    def __getitem__(self, name: str):
        return self.get_collection(name)

    def get_collection(self, name: str, **options):
        collection = self._db.get_collection(name, **options)
        return ScopedCollection(collection, self.tenant_id) if name in self._scoped else collection

    def __getattr__(self, name: str):
        # `command`, `name`, `client`, `list_collection_names`: the database's own.
        return getattr(self._db, name)

    def local_id(self, value: str) -> str:
        return local_id(self.tenant_id, value)


def local_id(tenant_id: Any, value: str) -> str:
    """An `_id` made from a value that two accounts may share (a call id, a number's digest):
    unique across accounts by the tenant's id in front; unchanged in single-account mode, so the
    documents a database already holds keep their ids."""
    return value if tenant_id is None else f"{tenant_id}:{value}"


class ScopedCollection:
    def __init__(self, collection, tenant_id: Any):
        self._collection = collection
        self.tenant_id = tenant_id

    def __getattr__(self, name: str):
        if name in _REFUSED_METHODS:
            raise TenantScopeError(f"{name} is not available on a tenant's collection: it would not be scoped")
        # Index management, `name`, `database`: the collection's own (indexes span accounts).
        return getattr(self._collection, name)

    def local_id(self, value: str) -> str:
        return local_id(self.tenant_id, value)

    # -- reads ---------------------------------------------------------------------------------

    def find(self, filter=None, *args, **kwargs):
        return self._collection.find(self._filter(filter), *args, **kwargs)

    def find_one(self, filter=None, *args, **kwargs):
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}  # pymongo's find_one(id) shorthand
        return self._collection.find_one(self._filter(filter), *args, **kwargs)

    def count_documents(self, filter, *args, **kwargs):
        return self._collection.count_documents(self._filter(filter), *args, **kwargs)

    def distinct(self, key, filter=None, *args, **kwargs):
        return self._collection.distinct(key, self._filter(filter), *args, **kwargs)

    def aggregate(self, pipeline, *args, **kwargs):
        for stage in pipeline:
            if _ESCAPING_STAGES.intersection(stage):
                raise TenantScopeError(f"a tenant's aggregation may not use {sorted(stage)[0]}: it leaves the scope")
        if pipeline and set(pipeline[0]) == {"$match"}:
            # One `$match` with the account in it, not one of its own before the caller's: a server
            # that does not merge them (the test run's wire server) would read the account's every
            # document to apply the second.
            return self._collection.aggregate([{"$match": self._filter(pipeline[0]["$match"])}, *pipeline[1:]],
                                              *args, **kwargs)
        return self._collection.aggregate([{"$match": self._filter(None)}, *pipeline], *args, **kwargs)

    # -- writes --------------------------------------------------------------------------------

    def insert_one(self, document, *args, **kwargs):
        return self._collection.insert_one(self._stamped(document), *args, **kwargs)

    def insert_many(self, documents, *args, **kwargs):
        return self._collection.insert_many([self._stamped(d) for d in documents], *args, **kwargs)

    def update_one(self, filter, update, *args, **kwargs):
        return self._collection.update_one(self._filter(filter), self._checked(update), *args,
                                           **kwargs)

    def update_many(self, filter, update, *args, **kwargs):
        return self._collection.update_many(self._filter(filter), self._checked(update), *args,
                                            **kwargs)

    def find_one_and_update(self, filter, update, *args, **kwargs):
        return self._collection.find_one_and_update(self._filter(filter), self._checked(update), *args,
                                                    **kwargs)

    def replace_one(self, filter, replacement, *args, **kwargs):
        return self._collection.replace_one(self._filter(filter), self._stamped(replacement), *args, **kwargs)

    def delete_one(self, filter, *args, **kwargs):
        return self._collection.delete_one(self._filter(filter), *args, **kwargs)

    def delete_many(self, filter, *args, **kwargs):
        return self._collection.delete_many(self._filter(filter), *args, **kwargs)

    def find_one_and_delete(self, filter, *args, **kwargs):
        return self._collection.find_one_and_delete(self._filter(filter), *args, **kwargs)

    def bulk_write(self, requests, *args, **kwargs):
        return self._collection.bulk_write([self._scoped_request(r) for r in requests], *args, **kwargs)

    # -- the scope -----------------------------------------------------------------------------

    def _filter(self, filter) -> dict:
        scoped = dict(filter or {})
        if TENANT_FIELD in scoped and scoped[TENANT_FIELD] != self.tenant_id:
            raise TenantScopeError("a filter names another account's userId")
        scoped[TENANT_FIELD] = self.tenant_id
        return scoped

    def _stamped(self, document):
        if document.get(TENANT_FIELD, self.tenant_id) != self.tenant_id:
            raise TenantScopeError("a document names another account's userId")
        # In place, as pymongo adds `_id` in place: callers may read either back.
        document[TENANT_FIELD] = self.tenant_id
        return document

    def _checked(self, update):
        if isinstance(update, Mapping):
            for operator, fields in update.items():
                if isinstance(fields, Mapping) and _touches_tenant(fields):
                    raise TenantScopeError(f"an update may not {operator} userId")
            return update
        for stage in update:  # an aggregation-pipeline update
            if _REPLACING_STAGES.intersection(stage) or _includes_only_some(stage.get("$project")):
                raise TenantScopeError("a tenant's update may not replace the whole document")
            for body in stage.values():
                if isinstance(body, Mapping) and _touches_tenant(body):
                    raise TenantScopeError("an update may not change userId")
                if isinstance(body, (str, list)) and TENANT_FIELD in ([body] if isinstance(body, str) else body):
                    raise TenantScopeError("an update may not remove userId")
        return update

    def _scoped_request(self, request):
        """A copy of a bulk request with the scope applied; pymongo's request classes keep their
        filter and document in `_filter` and `_doc` (pinned driver; tests/test_tenant_scope.py)."""
        request = copy.copy(request)
        if isinstance(request, InsertOne):
            request._doc = self._stamped(request._doc)
            return request
        if not isinstance(request, (UpdateOne, UpdateMany, ReplaceOne, DeleteOne, DeleteMany)):
            raise TenantScopeError(f"{type(request).__name__} cannot be scoped to a tenant")
        request._filter = self._filter(request._filter)
        if isinstance(request, ReplaceOne):
            request._doc = self._stamped(request._doc)
        elif isinstance(request, (UpdateOne, UpdateMany)):
            request._doc = self._checked(request._doc)
        return request


def _includes_only_some(projection) -> bool:
    """An inclusion `$project` keeps only the fields it names, and so would drop `userId`."""
    return isinstance(projection, Mapping) and any(v not in (0, False) for k, v in projection.items() if k != "_id")


def _touches_tenant(fields: Mapping) -> bool:
    return any(name == TENANT_FIELD or name.startswith(TENANT_FIELD + ".") for name in fields)
