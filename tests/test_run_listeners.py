"""Run listeners (the metrics hook) see every finished run, and can never fail one."""
from fakes.bolna_server import FakeBolna
from services.database import SYNC_RUNS
from tests.helpers import AGENT, build_app, execution


def test_listeners_get_the_stored_record_and_a_failing_one_is_contained(settings, mongo, db):
    seen = []

    def broken(_run):
        raise RuntimeError("observer bug")

    with FakeBolna([AGENT], [execution()], api_key=settings.bolna_api_key) as bolna:
        app = build_app(settings, mongo, bolna)
        app.account.runs.subscribe(broken)
        app.account.runs.subscribe(seen.append)
        record = app.run_job("crm_sync")

    assert record["status"] == "ok"
    assert seen == [record]
    stored = db[SYNC_RUNS].find_one({"_id": record["_id"]})
    assert stored["status"] == "ok" and stored["counts"] == record["counts"]


def test_a_listener_subscribed_to_the_single_accounts_runtime_sees_its_runs_without_an_account(settings, mongo):
    """The daemon subscribes its watchdog after the app is built; one account's runs carry no `userId`."""
    seen = []
    with FakeBolna([AGENT], [execution()], api_key=settings.bolna_api_key) as bolna:
        app = build_app(settings, mongo, bolna)
        app.subscribe(seen.append)
        record = app.run_job("crm_sync")

    assert seen == [record] and "userId" not in record
