"""The daemon under systemd's notify protocol: this test plays systemd (binds $NOTIFY_SOCKET, sets
$WATCHDOG_USEC) and reads what a real `run_daemon` subprocess tells it: READY, the watchdog pings,
their stop while a job hangs on a Bolna response held open, and STOPPING."""
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time

import pytest

from fakes.bolna_server import FakeBolna
from tests.helpers import AGENT, execution
from tests.test_service import DAEMON, Daemon
from worker.health import JobWatch, notify

pytestmark = pytest.mark.timeout(60)

WATCHDOG_SECONDS = 0.6  # a beat every 0.2 s
DEADLINE_SECONDS = 2.0


class FakeSystemd:
    """A unix datagram socket, as systemd binds for a notify unit; each message kept with the time
    it arrived."""

    def __init__(self):
        self._dir = tempfile.mkdtemp(prefix="notify-", dir="/tmp")  # a socket path has at most 107 bytes
        self.path = os.path.join(self._dir, "sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.extend((time.monotonic(), line) for line in data.decode().splitlines())

    def times_of(self, line: str, since: float = 0.0) -> list[float]:
        with self._lock:
            return [at for at, message in self.messages if message == line and at >= since]

    def wait_for(self, line: str, since: float = 0.0, timeout: float = 20) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if times := self.times_of(line, since):
                return times[0]
            time.sleep(0.02)
        raise AssertionError(f"no {line!r} since {since}: {self.messages}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self._dir)


@pytest.fixture
def systemd():
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_ready_pings_stop_while_a_job_hangs_and_resume_then_stopping(systemd):
    calls = [execution(f"+91987654{n:04d}", minutes_ago=5 + n, call_id=f"c-{n:03d}") for n in range(6)]
    release = threading.Event()
    with FakeBolna([AGENT], calls, api_key="service-key") as bolna:
        # The first listing of executions is held unanswered: its job hangs for real, in its
        # HTTP read, well within the client's timeout.
        bolna.on_answer(r"/executions$", lambda: release.wait(30))
        settings = {"mongodb_db": "callsync", "bolna_api_key": "service-key", "bolna_base_url": bolna.base_url,
                    "backfill_days": 8, "http_timeout_seconds": 40, "job_deadline_seconds": DEADLINE_SECONDS}
        env = {**os.environ, "NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1e6))}
        daemon = Daemon([sys.executable, "-c", DAEMON, json.dumps(settings)], env=env)
        try:
            ready = systemd.wait_for("READY=1")
            first_ping = systemd.wait_for("WATCHDOG=1")
            assert first_ping - ready < 2 * WATCHDOG_SECONDS
            # The hung job's deadline passes: the pings stop, while the scheduler itself is fine.
            daemon.wait_for_line('"watchdog_stalled"', timeout=DEADLINE_SECONDS + 10)
            stalled_at = time.monotonic()
            time.sleep(3 * WATCHDOG_SECONDS)  # what systemd would take as a hang (and kill)
            assert systemd.times_of("WATCHDOG=1", since=stalled_at) == []
            last_ping = max(systemd.times_of("WATCHDOG=1"))
            assert last_ping - ready >= DEADLINE_SECONDS - WATCHDOG_SECONDS

            release.set()  # the response comes: the job gets on and finishes, the pings resume
            resumed = systemd.wait_for("WATCHDOG=1", since=stalled_at)
            daemon.wait_for_line('"watchdog_resumed"', timeout=30)
            assert systemd.times_of("STOPPING=1") == []

            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=30) == 0
            assert systemd.wait_for("STOPPING=1", since=resumed, timeout=30)
        finally:
            release.set()
            if daemon.process.poll() is None:
                daemon.process.kill()
    assert "Traceback" not in daemon.process.stderr.read()


def test_without_a_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_an_abstract_socket_name_is_reached(monkeypatch):
    name = f"callsync-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1", "STATUS=up") is True
        assert sock.recv(100) == b"READY=1\nSTATUS=up"


def test_a_job_that_got_on_is_not_overdue_and_another_jobs_run_does_not_excuse_a_hung_one():
    now = [0.0]
    watch = JobWatch(10, clock=lambda: now[0])
    sent = []
    def beat():
        watch.heartbeat(send=lambda *fields: sent.append(fields) or True)
    entered, leave = threading.Event(), threading.Event()

    def hang():
        entered.set()
        leave.wait(5)

    watch.watched("crm_sync", lambda: None)  # both jobs scheduled, as build_scheduler does
    thread = threading.Thread(target=watch.watched("call_processor", hang))
    thread.start()
    assert entered.wait(30)
    now[0] = 9
    beat()
    watch.progress({"job": "crm_sync"})  # another job's run: no progress of this one
    now[0] = 11
    beat()
    assert watch.overdue() == {"call_processor": 11} and len(sent) == 1
    watch.progress({"job": "accounts-of-a-pass", "userId": "a"})  # not a scheduled job's own: all got on
    now[0] = 20
    beat()
    assert len(sent) == 2
    leave.set()
    thread.join()
    now[0] = 100
    assert watch.overdue() == {}
