"""The merge of legacy records racing a customer upsert again on a real server (tests.real_mongo):
the status rule must hold through the server's pipeline update, not through mongomock."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_customer_rules import test_a_call_written_while_legacy_records_are_merged_is_not_undone  # noqa: F401
