"""Many accounts again on a real server (tests.real_mongo): scoping by `userId` through the
server's own upserts and unique indexes, the claims of two replicas through its atomic
find-and-modify, the LLM ceiling through its `$inc`."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_fleet import *  # noqa: F401,F403 - collected again, on the server
from tests.test_account_scope import *  # noqa: F401,F403 - collected again, on the server
