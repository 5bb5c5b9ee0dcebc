"""Order-safe call writes and webhooks again on a real server (tests.real_mongo): the pipeline
update, the inbox's unique key and leases must hold on the server's semantics, not mongomock's."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_call_order import *  # noqa: F401,F403 - collected again, on the server
from tests.test_webhooks import *  # noqa: F401,F403
