"""The account source's database tests again on a real server (tests.real_mongo): the default
filter's `$nin: [null, ""]`, the dotted paths and the projection as MongoDB reads them."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_account_source import TestSourceOnDatabase  # noqa: F401 - collected again, on the server
