"""The customer writes racing each other, and cut off by a crash, again on a real server
(tests.real_mongo): the status rule and the status-change log must hold through the server's
pipeline updates, not through mongomock; so must the held-back log when a person locks or unlocks
a field meanwhile."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_customer_rules import (  # noqa: F401 - collected again, on the server
    test_a_call_written_while_legacy_records_are_merged_is_not_undone,
    test_the_status_rule_on_the_server_agrees_with_python_on_every_pair,
    test_a_status_change_cut_off_by_a_crash_is_logged_once_by_the_retry_and_never_one_not_made,
    test_a_status_change_is_logged_only_as_the_write_made_it_when_two_writers_race,
    test_a_lock_set_between_the_read_and_the_write_is_logged_as_held_back_once,
    test_a_lock_removed_between_the_read_and_the_write_logs_no_held_back,
    test_a_held_back_value_cut_off_by_a_crash_is_logged_once_by_the_retry)
from tests.test_plain_inserts import (  # noqa: F401 - collected again, on the server
    test_the_insert_makes_the_record_the_upsert_makes, test_a_number_written_since_the_read_gets_the_upsert_instead,
    test_the_call_insert_makes_the_document_the_upsert_makes)
from tests.test_mongomock_extensions import (  # noqa: F401 - collected again, on the server
    collection, test_merge_objects_as_an_expression, test_not_of_an_array_of_one, test_an_array_literal_is_evaluated,
    test_the_unset_stage_in_an_aggregation_and_a_pipeline_update, test_hello_tells_the_server_time,
    test_coll_mod_changes_a_ttl_index_expiry_in_place)
