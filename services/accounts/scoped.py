"""One account's view of the database: every read and write of a account's collection is confined
to documents whose `userId` is the account's, and every document written carries it.

The whole daemon runs on this view (the composition root hands it out), so scoping is not a
condition each query must remember: a filter gets `userId` added, an insert or a replacement gets
it stamped, an upsert inherits it from the filter (MongoDB copies a filter's equalities into the
document it inserts), and an aggregation starts by matching it. Single-account mode is the account
`None`: `{userId: null}` also matches documents without the field, so a database written before
accounts existed is that account's, unchanged.

The view denies by default (docs/reliability.md, "Accounts"): what is not on the lists below is
refused by name. A new need is a line added to a list, after checking it cannot leave the account.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Iterable, Mapping

from bson import ObjectId
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

ACCOUNT_FIELD = "userId"

# The collection methods the view offers: the options each accepts, then how each positional
# argument is scoped (a method of ScopedCollection: `_filter` adds the account, `_checked` refuses
# an update that could leave it, `_stamped` writes it in); no further positional argument is taken.
# Left out on purpose: `collation` (a case-insensitive one makes `userId: "acme"` match "ACME"),
# `let`, `session`, `array_filters` and the rest no caller passes.
_READ_OPTIONS = frozenset({"projection", "sort", "limit", "skip", "hint"})
_UPSERT_OPTIONS = frozenset({"upsert", "hint"})
_METHODS = {
    "find": (_READ_OPTIONS,), "find_one": (_READ_OPTIONS,),  # their own methods below
    "distinct": (frozenset(),), "aggregate": (frozenset({"hint"}),),
    "count_documents": (frozenset({"hint", "limit", "skip"}), "_filter"),
    "insert_one": (frozenset(), "_stamped"), "insert_many": (frozenset({"ordered"}), "_stamped_all"),
    "update_one": (_UPSERT_OPTIONS, "_filter", "_checked"),
    "update_many": (_UPSERT_OPTIONS, "_filter", "_checked"),
    "replace_one": (_UPSERT_OPTIONS, "_filter", "_stamped"),
    "find_one_and_update": (frozenset({"projection", "sort", "upsert", "return_document", "hint"}), "_filter",
                            "_checked"),
    "delete_one": (frozenset({"hint"}), "_filter"), "delete_many": (frozenset({"hint"}), "_filter"),
    "find_one_and_delete": (frozenset({"projection", "sort", "hint"}), "_filter"),
    "bulk_write": (frozenset({"ordered"}), "_scoped_requests"),
}
# Passed through: the collection's name, and index management (indexes span accounts and touch no
# document; services/database.py builds them).
_PASSED_THROUGH = frozenset({"name", "full_name", "create_index", "create_indexes", "index_information",
                             "list_indexes", "drop_index"})
# Query operators (a filter is always ANDed with the account's `userId`).
_QUERY_OPERATORS = frozenset({"$and", "$or", "$nor", "$in", "$nin", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte",
                              "$exists", "$not"})
# Update operators, and the modifiers of `$push`. Not `$rename` (`{$rename: {x: "userId"}}`).
_UPDATE_OPERATORS = frozenset({"$set", "$unset", "$setOnInsert", "$inc", "$push", "$pull", "$max", "$min"})
_PUSH_MODIFIERS = frozenset({"$each", "$sort", "$slice", "$position"})
# Stages of a pipeline update: they may neither name `userId` nor keep only some fields (an
# inclusion `$project`, `$replaceWith`, `$replaceRoot` would drop it).
_UPDATE_STAGES = frozenset({"$set", "$addFields", "$unset", "$project"})
# Aggregation stages after the account's `$match`: each sees only the documents before it. Not
# `$lookup`, `$graphLookup`, `$unionWith`, `$facet` (which may hold them), `$out`, `$merge`, `$documents`.
_AGGREGATION_STAGES = frozenset({"$match", "$group", "$sort", "$limit", "$skip", "$project", "$count"})
# A cursor's own methods that change nothing of its query's scope (not `collation`, `where`, `min`, `max`).
_CURSOR_METHODS = frozenset({"sort", "limit", "skip", "batch_size", "close", "alive", "hint"})
# What the view of the database offers besides its collections: `command` only with these, and
# `collMod` of a TTL index's expiry on one of its collections (`_changes_an_expiry_only`).
_COMMANDS = frozenset({"hello", "ping"})


class AccountScopeError(RuntimeError):
    """An operation that would leave its account, or that the view does not offer."""


class AccountDatabase:
    """A database as one account sees it: the collections named in `scoped`, each scoped to the
    account, and nothing else (the shared ones are reached by the code that serves every account)."""

    def __init__(self, db, account_id: Any, scoped: Iterable[str]):
        if (problem := account_id_problem(account_id)) is not None:
            raise AccountScopeError(f"account {account_id!r}: {problem}")
        self._db = db
        self.account_id = account_id
        self._scoped = frozenset(scoped)

    def __getitem__(self, name: str):
        return self.get_collection(name)

    def get_collection(self, name: str, **options):
        if name not in self._scoped:
            raise AccountScopeError(f"collection {name!r} is not an account's: it cannot be reached through an account's view")
        if options:
            raise AccountScopeError(f"get_collection options {sorted(options)} are not available on an account's view")
        return ScopedCollection(self._db.get_collection(name), self.account_id)

    def __getattr__(self, name: str):
        # pymongo reads `db.customers` as `db["customers"]`: the same, scoped, collection; and a
        # database method (`command` aside, `drop_collection`, `client`, …) is refused by name.
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._scoped:
            return self[name]
        raise AccountScopeError(f"{name} is not available on an account's view of the database")

    def list_collection_names(self, **_ignored) -> list[str]:
        return sorted(self._scoped.intersection(self._db.list_collection_names()))

    def command(self, command, *args, **kwargs):
        name = command if isinstance(command, str) else next(iter(command), None)
        if name not in _COMMANDS and not self._changes_an_expiry_only(command, args, kwargs):
            raise AccountScopeError(f"command {name!r} is not available on an account's view of the database")
        return self._db.command(command, *args, **kwargs)

    def _changes_an_expiry_only(self, command, args, kwargs) -> bool:
        """`{collMod: <one of the view's collections>, index: {name, expireAfterSeconds}}` and nothing
        more (no validator, no other index option): index management, as `drop_index` and
        `create_indexes` on its collections are; services/database.py changes a retention so."""
        return (not args and not kwargs and isinstance(command, Mapping) and list(command) == ["collMod", "index"]
                and command["collMod"] in self._scoped and isinstance(command["index"], Mapping)
                and set(command["index"]) == {"name", "expireAfterSeconds"})


LOCAL_ID_SEPARATOR = ":"


def local_id(account_id: Any, value: str) -> str:
    """An `_id` made from a value that two accounts may share (a call id, a number's digest):
    unique across accounts by the account's id in front (`account_id_problem` says why no two
    accounts' ids meet); unchanged in single-account mode, so the documents a database already
    holds keep their ids."""
    return value if account_id is None else f"{account_id}{LOCAL_ID_SEPARATOR}{value}"


def account_id_problem(account_id: Any) -> str | None:
    """Why `account_id` cannot be an account's id, or None: an ObjectId, or a string without the
    separator of `local_id` (with one, "acme" + ":x" and "acme:" + "x" would be one id; AccountSource
    refuses a string spelling another account's ObjectId). Other types are refused too: their
    spelling may be a string's (5 and "5")."""
    if account_id is None or isinstance(account_id, ObjectId):
        return None
    if not isinstance(account_id, str) or not account_id:
        return "_id must be an ObjectId or a non-empty string"
    if LOCAL_ID_SEPARATOR in account_id:
        return f"_id must not contain {LOCAL_ID_SEPARATOR!r}: it ends the account's part of its records' ids"
    return None


class ScopedCollection:
    def __init__(self, collection, account_id: Any):
        self._collection = collection
        self.account_id = account_id

    def __getattr__(self, name: str):
        if name in _PASSED_THROUGH:
            return getattr(self._collection, name)
        if name in _METHODS:
            return functools.partial(self._scoped_call, name)
        if name.startswith("_"):
            raise AttributeError(name)
        raise AccountScopeError(f"{name} is not available on an account's collection")

    def local_id(self, value: str) -> str:
        return local_id(self.account_id, value)

    def _scoped_call(self, method: str, *args, **options):
        _check_options(method, options)
        scopes = _METHODS[method][1:]
        if len(args) != len(scopes):
            raise TypeError(f"{method} takes {len(scopes)} positional argument(s) on an account's collection")
        scoped = [getattr(self, scope)(arg) for scope, arg in zip(scopes, args)]
        return getattr(self._collection, method)(*scoped, **options)

    def find(self, filter=None, projection=None, **options):
        _check_options("find", options)
        return _ScopedCursor(self._collection.find(self._filter(filter), projection, **options))

    def find_one(self, filter=None, projection=None, **options):
        _check_options("find_one", options)
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}  # pymongo's find_one(id) shorthand
        return self._collection.find_one(self._filter(filter), projection, **options)

    def distinct(self, key, filter=None, **options):
        _check_options("distinct", options)
        return self._collection.distinct(key, self._filter(filter), **options)

    def aggregate(self, pipeline, **options):
        _check_options("aggregate", options)
        pipeline = list(pipeline)
        for stage in pipeline:
            _check_stage(stage, _AGGREGATION_STAGES, "an account's aggregation")
            if "$match" in stage:
                _check_filter(stage["$match"])
        # One `$match` with the account in it, the caller's first one included, not one of its own
        # before the caller's: a server that does not merge them (the test run's wire server) would
        # read the account's every document to apply the second.
        first = pipeline.pop(0)["$match"] if pipeline and set(pipeline[0]) == {"$match"} else None
        return self._collection.aggregate([{"$match": self._filter(first)}, *pipeline], **options)

    # -- the scope -----------------------------------------------------------------------------

    def _filter(self, filter) -> dict:
        _check_filter({} if filter is None else filter)
        scoped = dict(filter or {})
        if ACCOUNT_FIELD in scoped and scoped[ACCOUNT_FIELD] != self.account_id:
            raise AccountScopeError("a filter names another account's userId")
        scoped[ACCOUNT_FIELD] = self.account_id
        return scoped

    def _stamped(self, document):
        if document.get(ACCOUNT_FIELD, self.account_id) != self.account_id:
            raise AccountScopeError("a document names another account's userId")
        # In place, as pymongo adds `_id` in place: callers may read either back.
        document[ACCOUNT_FIELD] = self.account_id
        return document

    @staticmethod
    def _checked(update):
        if isinstance(update, Mapping):
            for operator, fields in update.items():
                if operator not in _UPDATE_OPERATORS:
                    raise AccountScopeError(f"update operator {operator} is not available on an account's collection")
                if not isinstance(fields, Mapping):
                    raise AccountScopeError(f"{operator} takes a document")
                if _touches_account(fields):
                    raise AccountScopeError(f"an update may not {operator} userId")
                if operator == "$push":
                    for value in fields.values():
                        if isinstance(value, Mapping) and any(k.startswith("$") for k in value):
                            if not set(value) <= _PUSH_MODIFIERS:
                                refused = sorted(set(value) - _PUSH_MODIFIERS)
                                raise AccountScopeError(f"$push modifiers {refused} are not available")
            return update
        if not isinstance(update, list):
            raise AccountScopeError(f"an update must be a document or a pipeline, not {type(update).__name__}")
        for stage in update:  # an aggregation-pipeline update
            _check_stage(stage, _UPDATE_STAGES, "an account's pipeline update")
            (name, body), = stage.items()
            names = [body] if isinstance(body, str) else body
            if name == "$unset" and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise AccountScopeError("$unset takes a field name or a list of them")
            if name != "$unset" and not isinstance(body, Mapping):
                raise AccountScopeError(f"{name} takes a document")
            if _touches_account(names):
                raise AccountScopeError(f"a pipeline update may not {name} userId")
            # Anything but an exclusion `$project` keeps only the fields it names (`{_id: 1}`
            # included), or computes new ones, and so would drop `userId`.
            if name == "$project" and any(value not in (0, False) for value in body.values()):
                raise AccountScopeError("a pipeline update may not $project some fields only: it would drop userId")
        return update

    def _stamped_all(self, documents):
        return [self._stamped(document) for document in documents]

    def _scoped_requests(self, requests):
        return [self._scoped_request(request) for request in requests]

    def _scoped_request(self, request):
        """A copy of a bulk request with the scope applied; pymongo's request classes keep their
        filter and document in `_filter` and `_doc` (pinned driver; tests/test_account_scope.py)."""
        if type(request) not in (InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne, DeleteMany):
            raise AccountScopeError(f"{type(request).__name__} cannot be scoped to a account")
        refused = [name for name in ("_collation", "_array_filters") if getattr(request, name, None) is not None]
        if refused:
            raise AccountScopeError(f"a bulk request's {refused[0][1:]} is not available on an account's collection")
        request = copy.copy(request)
        if isinstance(request, InsertOne):
            request._doc = self._stamped(request._doc)
            return request
        request._filter = self._filter(request._filter)
        if isinstance(request, ReplaceOne):
            request._doc = self._stamped(request._doc)
        elif isinstance(request, (UpdateOne, UpdateMany)):
            request._doc = self._checked(request._doc)
        return request


class _ScopedCursor:
    """A find's cursor with only the methods that keep its query as the view built it."""

    def __init__(self, cursor):
        self._cursor = cursor

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._cursor)

    def __getattr__(self, name: str):
        if name not in _CURSOR_METHODS:
            raise AccountScopeError(f"cursor.{name} is not available on an account's collection")
        attribute = getattr(self._cursor, name)
        if not callable(attribute):
            return attribute

        def chained(*args, **kwargs):
            result = attribute(*args, **kwargs)
            return self if result is self._cursor else result
        return chained


def _check_options(method: str, options: Mapping) -> None:
    refused = sorted(set(options) - _METHODS[method][0])
    if refused:
        raise AccountScopeError(f"{method} option {refused[0]!r} is not available on an account's collection")


def _check_stage(stage, allowed: frozenset, what: str) -> None:
    if not isinstance(stage, Mapping) or len(stage) != 1:
        raise AccountScopeError(f"{what}: a stage must be a document with one operator")
    (name,) = stage
    if name not in allowed:
        raise AccountScopeError(f"{what} may not use {name}")


def _check_filter(filter) -> None:
    """Every operator of a query is one the view offers (the values compared are not walked)."""
    if not isinstance(filter, Mapping):
        raise AccountScopeError(f"a filter must be a document, not {type(filter).__name__}")
    for key, value in filter.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                raise AccountScopeError(f"{key} takes a list of filters")
            for clause in value:
                _check_filter(clause)
        elif key.startswith("$"):
            raise AccountScopeError(f"query operator {key} is not available on an account's collection")
        elif isinstance(value, Mapping):
            _check_condition(value)


def _check_condition(condition: Mapping) -> None:
    for operator, argument in condition.items():
        if not operator.startswith("$"):
            return  # an embedded document compared for equality
        if operator not in _QUERY_OPERATORS:
            raise AccountScopeError(f"query operator {operator} is not available on an account's collection")
        if operator == "$not" and isinstance(argument, Mapping):
            _check_condition(argument)


def _touches_account(fields: Iterable[str]) -> bool:
    return any(isinstance(name, str) and (name == ACCOUNT_FIELD or name.startswith(ACCOUNT_FIELD + ".")) for name in fields)
