"""The per-account view's tests again on a real server (tests.real_mongo), where `$facet`,
`$lookup`, `$unionWith`, collations and commands really run: each way out refused by name, and the
property that nothing sent through one account's view reaches another's (fewer examples: each
one seeds the server afresh)."""
from hypothesis import HealthCheck, given, settings

from services.database import CUSTOMERS
from tests.conftest import TEST_DB
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_account_scope import raw  # noqa: F401 - the fixture, on the server
from tests.test_account_scope import (test_a_collection_by_attribute_is_the_scoped_one,  # noqa: F401 - again
                                     test_an_operation_the_view_does_not_offer_is_refused_by_name,
                                     test_what_the_daemon_uses_still_passes)
from tests.test_account_scope_properties import OPERATIONS, run_through_the_view, seeded


@settings(max_examples=max(60, settings.default.max_examples // 5),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operation=OPERATIONS)
def test_nothing_sent_through_one_account_view_reaches_another_account_on_a_server(mongo, operation):
    database = mongo[TEST_DB]
    for name in (CUSTOMERS, "users", "elsewhere"):
        database.drop_collection(name)
    seeded(database)
    run_through_the_view(database, operation)
