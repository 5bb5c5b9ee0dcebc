"""What a run writes to the log: structured JSON or text lines, never an API key or a full phone number."""
import io
import json
import logging
import re
import threading

import pytest
from pymongo.errors import BulkWriteError

from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedDatabase
from services.bolna_client import BolnaClient
from services.run_records import RunRecorder
from tests.helpers import AGENT, build_app, execution
from utils.logging import redact, setup_logging
from worker.app import AccountApp

pytestmark = pytest.mark.timeout(60)

API_KEY = "bn-live-7f3a9c2e5d"
PHONES = ["+91 98765 43210", "09811122233", "919900011122", "+1 415 555 2671"]


@pytest.fixture
def log_output():
    """setup_logging as the CLI calls it, into a buffer (conftest restores the root logger after)."""
    buffer = io.StringIO()

    def start(fmt: str) -> io.StringIO:
        setup_logging("INFO", fmt, secrets=(API_KEY,), stream=buffer)
        return buffer

    return start


@pytest.fixture
def run_both_jobs(settings, mongo):
    """Runs with everything that writes log lines: malformed records, an invalid number, and an
    upstream error whose text quotes what it was sent (here the API key, pasted as an agent id)."""
    calls = [execution(phone, minutes_ago=10 + n, call_id=f"c-{n}") for n, phone in enumerate(PHONES)]
    calls.append(execution("12345", call_id="bad-phone"))
    calls.append(execution("+91 99887 76655", call_id="bad-extracted", extracted="{name: Ravi"))
    with FakeBolna([AGENT], calls, api_key=API_KEY) as bolna:
        app = build_app(settings.with_overrides(bolna_api_key=API_KEY, bolna_agent_ids=("agent-1", API_KEY)),
                        mongo, bolna)
        yield lambda: [app.run_job(job) for job in ("crm_sync", "call_processor")]


def assert_no_secret_or_phone(text: str) -> None:
    assert API_KEY not in text
    for phone in PHONES + ["+91 99887 76655"]:
        digits = re.sub(r"\D", "", phone)
        national = digits[-10:]
        assert national not in re.sub(r"[\s()-]", "", text), phone
    assert "***" in text  # the masks are there: the runs did log what was masked


def test_json_lines_carry_the_run_context_and_no_secrets(log_output, run_both_jobs):
    buffer = log_output("json")
    records = run_both_jobs()
    text = buffer.getvalue()

    assert_no_secret_or_phone(text)
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"timestamp", "level", "message"} <= line.keys() for line in lines)
    finished = {line["job"]: line for line in lines if line.get("event") == "run_finished"}
    for record in records:
        line = finished[record["job"]]
        assert line["run_id"] == record["_id"] and line["counts"] == record["counts"]
        assert line["level"] == "INFO" and line["timestamp"].endswith("+00:00")
    errors = [line for line in lines if line.get("event") == "bolna_error"]
    assert errors and all(line["level"] == "WARNING" and line["run_id"] for line in errors)
    assert not any(value is None for line in lines for value in line.values())


def test_text_lines_carry_the_run_context_and_no_secrets(log_output, run_both_jobs):
    buffer = log_output("text")
    records = run_both_jobs()
    text = buffer.getvalue()

    assert_no_secret_or_phone(text)
    for record in records:
        finished = [line for line in text.splitlines()
                    if f"run_id={record['_id']}" in line and "run finished" in line]
        assert len(finished) == 1 and f"job={record['job']}" in finished[0]
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", finished[0])
    assert "=None" not in text


def test_the_redaction_net_masks_keys_tokens_credentials_and_numbers(log_output):
    buffer = log_output("json")
    logging.getLogger("upstream").error(
        "refused %s with Authorization: Bearer gsk_abcdef123456 for +91 98765 43210 via mongodb://app:s3cret@db:27017",
        API_KEY)
    line = json.loads(buffer.getvalue())
    assert line["message"] == ("refused *** with Authorization: Bearer *** for ***3210 "
                               "via mongodb://***@db:27017")


def test_run_record_errors_mask_phone_numbers_and_tokens():
    recorder = RunRecorder("crm_sync")
    recorder.error("Bolna answered HTTP 400: bad number +91 98765 43210 (Bearer abc.def)", code="bolna_error")
    message = recorder.document()["errors"][0]["message"]
    assert "98765" not in message and "abc.def" not in message and "***3210" in message


@pytest.mark.parametrize("text, masked", [
    ("call from +91 98765 43210 failed", "call from ***3210 failed"),
    ("number 98765 43210 refused", "number ***3210 refused"),
    ("(415) 555-2671 and 415-555-2671", "***2671 and ***2671"),
    ("9876543210", "***3210"),
])
def test_redaction_masks_numbers_written_with_separators(text, masked):
    assert redact(text) == masked


@pytest.mark.parametrize("text", [
    "at 2026-11-23 17:34:55 ok", "run 6294382b0660483c897bc825daa60f44",
    "call 4c06b4d1-4096-4561-919a-4f94539c8d4a", "http://127.0.0.1:40417/x", "price 1,50,000",
])
def test_redaction_leaves_dates_ids_and_addresses(text):
    assert redact(text) == text


def test_database_errors_are_recorded_without_the_documents_they_quote():
    recorder = RunRecorder("call_processor")
    error = BulkWriteError({"writeErrors": [{"code": 2, "errmsg": "bad", "op": {"email": "asha@x.in"}}]})
    recorder.finish(error)
    [entry] = recorder.document()["errors"]
    assert entry["message"] == "BulkWriteError (code 65)" and "asha" not in entry["message"]


def test_debug_never_turns_on_the_loggers_that_write_documents_and_request_bodies():
    """The driver's command log holds whole documents (an account's key read from `users`) and the
    Groq client's request log the transcript: neither is masked reliably, so neither is turned on."""
    setup_logging("DEBUG", stream=io.StringIO())
    assert logging.getLogger("pymongo").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("pymongo.command").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("groq._base_client").getEffectiveLevel() == logging.WARNING


def json_lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def test_every_line_of_a_run_carries_job_run_and_account_from_every_thread(log_output, settings, mongo):
    buffer = log_output("json")
    calls = [execution(f"+9198765432{n:02d}", minutes_ago=10 + n, call_id=f"c-{n}") for n in range(3)]
    with FakeBolna([AGENT], calls, api_key=settings.bolna_api_key, projection="trimmed") as bolna:
        # One account's app, as a fleet replica builds it; its first listing and one full record fail
        # once: the listing is read ahead in a worker thread, full records in the reader's pool.
        app = AccountApp(settings.with_overrides(bolna_base_url=bolna.base_url, bolna_fetch_concurrency=2),
                         HookedDatabase(mongo[settings.mongodb_db]), BolnaClient.from_settings(
                             settings.with_overrides(bolna_base_url=bolna.base_url), stop=threading.Event()),
                         account_id="acme")
        bolna.inject(r"/executions$", status=500)
        bolna.inject(r"/executions/c-1$", status=503)
        run = app.run_job("crm_sync")
    lines = json_lines(buffer)
    retries = [line for line in lines if "retry" in line["message"]]
    assert len(retries) == 2, lines
    for line in lines:
        assert (line.get("job"), line.get("run_id"), line.get("account")) == ("crm_sync", run["_id"], "acme"), line


def test_a_failed_run_is_logged_once_with_its_traceback(log_output, settings, mongo):
    buffer = log_output("json")
    with FakeBolna([AGENT], [execution()], api_key=settings.bolna_api_key) as bolna:
        app = build_app(settings, mongo, bolna)
        bolna.inject("/v2/agent/", status=403)  # the key is refused: the run fails
        run = app.run_job("crm_sync")
    assert run["status"] == "failed"
    about_it = [line for line in json_lines(buffer) if "refused the API key" in line["message"]]
    assert len(about_it) == 1, about_it
    assert "Traceback" in about_it[0]["exception"] and about_it[0]["event"] == "run_failed"
