"""A property of the per-account view (services/accounts/scoped.py, issue 23): whatever filter,
update (operators or a pipeline), aggregation pipeline or handle account A's code sends through
its view, no other account's documents are read, changed or deleted. Either the operation is
refused (`AccountScopeError`), or every other account's document is byte-identical afterwards and
nothing of theirs came back.

Other accounts: "beta", "ALPHA" (a case-insensitive collation would match it) and a document
written before accounts existed (no `userId`). Every one of their values carries a marker (the
text "secret", numbers of a million and more), so a result holding one of them is a leak.

On mongomock here; tests/test_mongodb_integration_account_scope.py runs it on a real server.
The bounded profile runs in the test command; CALLSYNC_HYPOTHESIS_PROFILE=long runs many more.
"""
from __future__ import annotations

import bson
import mongomock
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import PyMongoError

from services.database import CUSTOMERS, account_view
from services.accounts.scoped import AccountScopeError
from tests.conftest import TEST_DB

MINE = "alpha"
OTHERS = ("beta", "ALPHA", None)  # None: a document without `userId` (written before accounts)
SECRET_NUMBER = 1_000_000
ACCOUNTS = st.sampled_from([MINE, *OTHERS[:2]])

FIELDS = st.sampled_from(["phone", "name", "n", "tags", "nested", "nested.k", "userId", "userId.x", "_id", "extra"])
SCALARS = st.one_of(st.integers(-5, 50), st.sampled_from(["Ravi", "x", "+911", "a1", "b1", MINE, "beta", "ALPHA"]),
                    st.none(), st.booleans())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(["k", "v"]), inner, max_size=2)),
                      max_leaves=4)
COMPARISONS = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not",
                               "$regex", "$type", "$elemMatch", "$size", "$all", "$expr", "$where"])


def _condition(operator: str, value):
    if operator in ("$in", "$nin", "$all"):
        return {operator: value if isinstance(value, list) else [value]}
    if operator == "$not":
        return {operator: {"$eq": value}}
    if operator == "$elemMatch":
        return {operator: {"$eq": value}}
    if operator == "$exists":
        return {operator: bool(value)}
    if operator == "$regex":
        return {operator: "a"}
    if operator == "$type":
        return {operator: "string"}
    if operator == "$size":
        return {operator: 1}
    if operator == "$expr":
        return {operator: {"$eq": ["$userId", "beta"]}}
    return {operator: value}


CLAUSES = st.one_of(
    st.tuples(FIELDS, VALUES).map(lambda fv: {fv[0]: fv[1]}),
    st.tuples(FIELDS, COMPARISONS, VALUES).map(lambda t: {t[0]: _condition(t[1], t[2])}),
    ACCOUNTS.map(lambda account: {"userId": account}),
    st.lists(ACCOUNTS, min_size=1, max_size=3).map(lambda accounts: {"userId": {"$in": accounts}}),
    st.just({"$where": "true"}),
    st.just({"$expr": {"$ne": ["$userId", MINE]}}),
)
FILTERS = st.recursive(
    st.lists(CLAUSES, max_size=3).map(lambda clauses: {k: v for clause in clauses for k, v in clause.items()}),
    lambda inner: st.tuples(st.sampled_from(["$and", "$or", "$nor"]), st.lists(inner, min_size=1, max_size=2))
    .map(lambda t: {t[0]: t[1]}),
    max_leaves=4)

UPDATE_OPERATORS = st.sampled_from(["$set", "$unset", "$setOnInsert", "$inc", "$max", "$min", "$mul", "$push",
                                    "$pull", "$addToSet", "$rename", "$currentDate", "$pop"])


def _operator_update(pairs):
    update: dict = {}
    for operator, field, value in pairs:
        if operator in ("$inc", "$mul", "$max", "$min"):
            value = value if isinstance(value, int) else 1
        elif operator == "$rename":
            value = value if isinstance(value, str) else "userId"
        elif operator == "$currentDate":
            value = True
        elif operator == "$pop":
            value = 1
        elif operator == "$push" and isinstance(value, list):
            value = {"$each": value, "$slice": -3}
        update.setdefault(operator, {})[field] = value
    return update


RENAME_TARGETS = st.sampled_from(["userId", "name", "userId.x", "moved"])
OPERATOR_UPDATES = st.one_of(
    st.lists(st.tuples(UPDATE_OPERATORS, FIELDS, st.one_of(VALUES, RENAME_TARGETS)), min_size=1, max_size=3)
    .map(_operator_update),
    st.tuples(FIELDS, RENAME_TARGETS).map(lambda ft: {"$rename": {ft[0]: ft[1]}}),
)
EXPRESSIONS = st.one_of(VALUES.map(lambda v: {"$literal": v}), st.sampled_from(["$name", "$userId", "$$REMOVE", "$$ROOT"]))
UPDATE_STAGES = st.one_of(
    st.tuples(st.sampled_from(["$set", "$addFields"]), st.dictionaries(FIELDS, EXPRESSIONS, min_size=1, max_size=2))
    .map(lambda t: {t[0]: t[1]}),
    st.lists(FIELDS, min_size=1, max_size=2).map(lambda fields: {"$unset": fields}),
    FIELDS.map(lambda field: {"$unset": field}),
    st.dictionaries(FIELDS, st.sampled_from([0, 1, True, "$name"]), min_size=1, max_size=2)
    .map(lambda p: {"$project": p}),
    st.sampled_from([{"$replaceWith": {"phone": "$phone"}}, {"$replaceRoot": {"newRoot": {"phone": "$phone"}}},
                     {"$replaceWith": {"$mergeObjects": ["$$ROOT", {"userId": "beta"}]}}]),
)
UPDATES = st.one_of(OPERATOR_UPDATES, st.lists(UPDATE_STAGES, min_size=1, max_size=3))

READING_ELSEWHERE = st.sampled_from([
    {"$lookup": {"from": CUSTOMERS, "pipeline": [], "as": "others"}},
    {"$lookup": {"from": CUSTOMERS, "localField": "phone", "foreignField": "phone", "as": "others"}},
    {"$unionWith": CUSTOMERS},
    {"$unionWith": {"coll": CUSTOMERS, "pipeline": [{"$match": {"userId": "beta"}}]}},
    {"$graphLookup": {"from": CUSTOMERS, "startWith": "$phone", "connectFromField": "phone",
                      "connectToField": "phone", "as": "others"}},
    {"$out": CUSTOMERS}, {"$merge": {"into": CUSTOMERS}}, {"$documents": [{"userId": "beta"}]},
])
# Stages that only transform what comes before them, drawn three times as often as the others, so
# that many pipelines run whole.
IN_PLACE_STAGES = st.one_of(
    FILTERS.map(lambda f: {"$match": f}),
    st.sampled_from([{"$group": {"_id": "$userId", "count": {"$sum": 1}}}, {"$group": {"_id": "$name", "n": {"$sum": "$n"}}},
                     {"$sort": {"phone": 1}}, {"$limit": 3}, {"$skip": 1}, {"$count": "count"},
                     {"$project": {"userId": 0}}]),
)
SIMPLE_STAGES = st.one_of(
    IN_PLACE_STAGES, IN_PLACE_STAGES, IN_PLACE_STAGES,
    st.sampled_from([{"$unset": "userId"}, {"$set": {"userId": "beta"}}, {"$replaceRoot": {"newRoot": {"u": "$userId"}}}]),
    READING_ELSEWHERE,
)
STAGES = st.recursive(
    SIMPLE_STAGES,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(["a", "b"]), st.lists(inner, min_size=1, max_size=2), min_size=1, max_size=2)
        .map(lambda facets: {"$facet": facets}),
        st.lists(inner, max_size=2).map(lambda sub: {"$lookup": {"from": CUSTOMERS, "pipeline": sub, "as": "others"}}),
        st.lists(inner, max_size=2).map(lambda sub: {"$unionWith": {"coll": CUSTOMERS, "pipeline": sub}}),
    ),
    max_leaves=4)
PIPELINES = st.lists(STAGES, max_size=4)

CASE_BLIND = {"locale": "en", "strength": 1}
COLLATION = st.one_of(st.just({}), st.just({"collation": CASE_BLIND}))
DOCUMENTS = st.dictionaries(FIELDS.filter(lambda f: "." not in f and f != "_id"), VALUES, max_size=3)


def _bulk_request(kind, filter, update, document, upsert):
    return {"insert": lambda: InsertOne(dict(document)), "update_one": lambda: UpdateOne(filter, update, upsert=upsert),
            "update_many": lambda: UpdateMany(filter, update, upsert=upsert),
            "replace": lambda: ReplaceOne(filter, dict(document), upsert=upsert),
            "delete_one": lambda: DeleteOne(filter), "delete_many": lambda: DeleteMany(filter)}[kind]()


BULK = st.lists(st.builds(_bulk_request, st.sampled_from(["insert", "update_one", "update_many", "replace",
                                                          "delete_one", "delete_many"]),
                          FILTERS, UPDATES, DOCUMENTS, st.booleans()), min_size=1, max_size=3)

# One operation through account A's view: (name, function of the view).
OPERATIONS = st.one_of(
    st.builds(lambda f, o: ("find", lambda v: v[CUSTOMERS].find(f, **o)), FILTERS, COLLATION),
    st.builds(lambda f: ("find_one", lambda v: v[CUSTOMERS].find_one(f)), FILTERS),
    st.builds(lambda f: ("count_documents", lambda v: v[CUSTOMERS].count_documents(f)), FILTERS),
    st.builds(lambda k, f: ("distinct", lambda v: v[CUSTOMERS].distinct(k, f)), FIELDS, FILTERS),
    st.builds(lambda p: ("aggregate", lambda v: v[CUSTOMERS].aggregate(p)), PIPELINES),
    st.builds(lambda p: ("aggregate", lambda v: v[CUSTOMERS].aggregate(p)), st.lists(IN_PLACE_STAGES, max_size=4)),
    st.builds(lambda f, u, up, o: ("update_one", lambda v: v[CUSTOMERS].update_one(f, u, upsert=up, **o)),
              FILTERS, UPDATES, st.booleans(), COLLATION),
    st.builds(lambda f, u, up: ("update_many", lambda v: v[CUSTOMERS].update_many(f, u, upsert=up)),
              FILTERS, UPDATES, st.booleans()),
    st.builds(lambda f, u, up: ("find_one_and_update", lambda v: v[CUSTOMERS].find_one_and_update(f, u, upsert=up)),
              FILTERS, UPDATES, st.booleans()),
    st.builds(lambda f, d, up: ("replace_one", lambda v: v[CUSTOMERS].replace_one(f, dict(d), upsert=up)),
              FILTERS, DOCUMENTS, st.booleans()),
    st.builds(lambda d: ("insert_one", lambda v: v[CUSTOMERS].insert_one(dict(d))), DOCUMENTS),
    st.builds(lambda f, o: ("delete_many", lambda v: v[CUSTOMERS].delete_many(f, **o)), FILTERS, COLLATION),
    st.builds(lambda f: ("delete_one", lambda v: v[CUSTOMERS].delete_one(f)), FILTERS),
    st.builds(lambda f: ("find_one_and_delete", lambda v: v[CUSTOMERS].find_one_and_delete(f)), FILTERS),
    st.builds(lambda rs: ("bulk_write", lambda v: v[CUSTOMERS].bulk_write(rs, ordered=False)), BULK),
    st.builds(lambda f: ("by attribute", lambda v: v.customers.delete_many(f)), FILTERS),
    st.builds(lambda f: ("cursor collation", lambda v: v[CUSTOMERS].find(f).collation(CASE_BLIND)), FILTERS),
    st.sampled_from([
        ("collection.database", lambda v: v[CUSTOMERS].database[CUSTOMERS].delete_many({})),
        ("database.client", lambda v: v.client[TEST_DB][CUSTOMERS].delete_many({})),
        ("drop_collection", lambda v: v.drop_collection(CUSTOMERS)),
        ("drop", lambda v: v[CUSTOMERS].drop()),
        ("command", lambda v: v.command("delete", CUSTOMERS, deletes=[{"q": {}, "limit": 0}])),
        ("rename", lambda v: v[CUSTOMERS].rename("elsewhere")),
        ("with_options", lambda v: v[CUSTOMERS].with_options().delete_many({})),
        ("another collection", lambda v: v["users"].find()),
    ]),
)


def seeded(database) -> None:
    customers = database[CUSTOMERS]
    customers.insert_many([{"_id": "a1", "userId": MINE, "phone": "+911", "name": "Ravi", "n": 1, "tags": ["x"],
                            "nested": {"k": "v"}},
                           {"_id": "a2", "userId": MINE, "phone": "+912", "name": "x", "n": 2, "tags": []}])
    for number, account in enumerate(OTHERS):
        document = {"_id": f"secret-{number}", "phone": "+911", "name": f"secret {account}",
                    "n": SECRET_NUMBER + number, "tags": ["secret"], "nested": {"k": "secret"}}
        if account is not None:
            document["userId"] = account
        customers.insert_one(document)
    database["users"].insert_one({"_id": "beta", "bolnaApiKey": "secret key"})


def others_documents(database) -> list[bytes]:
    return sorted(bson.encode(doc) for doc in database[CUSTOMERS].find({"userId": {"$ne": MINE}}))


def leaked(value) -> bool:
    """Something of another account's in a result: a marked text or number, or a count of more
    documents than account A holds."""
    if isinstance(value, dict):
        return any(leaked(v) for v in value.values()) or any(
            key == "count" and isinstance(v, int) and v > 2 for key, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(leaked(v) for v in value)
    if isinstance(value, str):
        return "secret" in value
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= SECRET_NUMBER


def run_through_the_view(database, operation) -> None:
    name, attempt = operation
    before = others_documents(database)
    mine_before = database[CUSTOMERS].count_documents({"userId": MINE})
    try:
        result = attempt(account_view(database, MINE))
        if hasattr(result, "__next__"):
            result = list(result)
    except AccountScopeError:
        result = None  # refused before it reached the server
    except (PyMongoError, NotImplementedError, TypeError, ValueError, KeyError, AttributeError) as exc:
        # The server refused it, or the driver did, or mongomock could not (its TypeErrors and
        # AttributeErrors on mixed types): what it did before failing is checked all the same.
        result = None
        assert "secret" not in str(exc), f"{name}: another account's data in an error"
    assert others_documents(database) == before, f"{name} changed another account's documents"
    assert database["users"].count_documents({}) == 1, f"{name} reached the accounts collection"
    if name == "count_documents":
        assert result is None or result <= mine_before
    else:
        assert not leaked(result), f"{name} returned another account's data: {result!r}"


@settings(max_examples=max(300, settings.default.max_examples))  # ~2 s; the long profile: 5,000
@given(operation=OPERATIONS)
def test_nothing_sent_through_one_account_view_reaches_another_account(operation):
    database = mongomock.MongoClient()[TEST_DB]
    seeded(database)
    run_through_the_view(database, operation)
