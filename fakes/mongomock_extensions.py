"""What MongoDB does that mongomock 4.3.0 (its latest release) does not, taught to it here, so the
product writes MongoDB's natural forms and the double adapts, not the product:

- `$mergeObjects` as an expression (mongomock knows it only as a `$group` accumulator);
- `{$not: [x]}`, the array form: mongomock negates the array itself (always true), so the
  result was always false;
- an array literal in an expression (`["$a", 1]`): mongomock returned it unevaluated;
- the `$unset` stage (of an aggregation or a pipeline update);
- the `hello` command, answered with `localTime` by the machine's clock (the server's clock of an
  in-process database is this process's);
- the `collMod` command changing a TTL index's `expireAfterSeconds` (by `name` or `keyPattern`);
  its other uses stay unimplemented.

Each is checked against the server's behaviour in tests/test_mongomock_extensions.py. Applied once,
on import (fakes/mongo_hooks.py imports this module: every mongomock the project uses goes
through it).
"""
from __future__ import annotations

from datetime import datetime, timezone

import mongomock
from mongomock import aggregate
from pymongo.errors import OperationFailure

from utils.clock import to_millis

_parse = aggregate._Parser.parse
_boolean = aggregate._Parser._handle_boolean_operator
_command = mongomock.database.Database.command


def _parse_with_extensions(self, expression):
    if isinstance(expression, list):
        # A field missing in an array literal is null there, as on a server.
        return [None if (value := self._parse_or_nothing(item)) is aggregate.NOTHING else value
                for item in expression]
    if isinstance(expression, dict) and len(expression) == 1 and "$mergeObjects" in expression:
        return _merge_objects(self, expression["$mergeObjects"])
    return _parse(self, expression)


def _merge_objects(parser, arguments) -> dict:
    merged: dict = {}
    for argument in arguments if isinstance(arguments, list) else [arguments]:
        value = parser._parse_or_nothing(argument)
        if value is aggregate.NOTHING or value is None:
            continue
        if not isinstance(value, dict):
            raise OperationFailure(f"$mergeObjects requires object inputs, but input is of type {type(value).__name__}")
        merged.update(value)
    return merged


def _boolean_with_not_of_one(self, operator, values):
    if operator == "$not" and isinstance(values, list):
        if len(values) != 1:
            raise OperationFailure(f"Expression $not takes exactly 1 arguments. {len(values)} were passed in.")
        values = values[0]
    return _boolean(self, operator, values)


def _unset_stage(in_collection, database, fields):
    names = [fields] if isinstance(fields, str) else list(fields)
    return aggregate._handle_project_stage(in_collection, database, {name: 0 for name in names})


def _command_with_extensions(self, command, **kwargs):
    if isinstance(command, str):
        command = {command: 1}
    name = next(iter(command), None)
    if name == "hello":
        local_time = to_millis(datetime.now(timezone.utc).replace(tzinfo=None))
        return {"isWritablePrimary": True, "localTime": local_time, "ok": 1.0}
    if name == "collMod" and set(command) == {"collMod", "index"}:
        return _change_expiry(self, command["collMod"], command["index"])
    return _command(self, command, **kwargs)


def _change_expiry(database, collection: str, index: dict) -> dict:
    if set(index) not in ({"name", "expireAfterSeconds"}, {"keyPattern", "expireAfterSeconds"}):
        raise NotImplementedError(f"collMod of an index with {sorted(index)}: only a TTL index's expiry is taught")
    if collection not in database.list_collection_names():
        raise OperationFailure(f"ns not found: {database.name}.{collection}", code=26)
    store = database[collection]._store
    found = [(name, spec) for name, spec in store.indexes.items()
             if name == index.get("name") or spec["key"] == list(index.get("keyPattern", {}).items())]
    if not found:
        raise OperationFailure(f"cannot find index for ns {database.name}.{collection}", code=27)
    [(name, spec)] = found
    if "expireAfterSeconds" not in spec:
        raise NotImplementedError("collMod making an index a TTL index: only a TTL index's expiry is taught")
    store.create_index(name, {**spec, "expireAfterSeconds": index["expireAfterSeconds"]})
    return {"expireAfterSeconds_old": spec["expireAfterSeconds"],
            "expireAfterSeconds_new": index["expireAfterSeconds"], "ok": 1.0}


def apply() -> None:
    """Idempotent."""
    aggregate._Parser.parse = _parse_with_extensions
    aggregate._Parser._handle_boolean_operator = _boolean_with_not_of_one
    aggregate._PIPELINE_HANDLERS["$unset"] = _unset_stage
    mongomock.database.Database.command = _command_with_extensions


apply()
