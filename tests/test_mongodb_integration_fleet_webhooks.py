"""Webhooks with many accounts again on a real server (tests.real_mongo): each delivery scoped by
`userId` through the server's own unique index, and one processor's claims across accounts."""
from tests.real_mongo import mongo  # noqa: F401 - the fixture, on the server
from tests.test_fleet_webhooks import *  # noqa: F401,F403 - collected again, on the server
