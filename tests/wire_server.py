"""A real MongoDB wire server for the test run and the benchmarks, where no `mongod` exists.

SecantusDB speaks MongoDB's wire protocol on the WiredTiger storage engine and installs from
PyPI. It is GPL-2.0 and pins its own pymongo, so it lives in its own virtual environment
(`.wire-server-venv/` in the repository root, created on first use and reused), runs as a separate
process, and is never imported: the project only talks to it over a socket, as to any server.

    python -m tests.wire_server      # start one, print its URI, stop it on Ctrl-C
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

PACKAGE = "SecantusDB==0.7.0b3"
ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("CALLSYNC_WIRE_SERVER_VENV") or ROOT / ".wire-server-venv")
START_TIMEOUT_SECONDS = 60


def _executable(venv: Path) -> Path:
    return venv / "bin" / "secantusd-py"


def ensure_installed(venv: Path = VENV) -> Path:
    """The server's executable, installing it first when the venv lacks it or holds another
    version. A lock file keeps two processes (a test run and a benchmark) from installing at once."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    marker = venv / "installed.txt"  # written last: a venv whose install broke off is redone
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and marker.read_text().strip() == PACKAGE and _executable(venv).exists()):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", PACKAGE],
                           check=True)
            marker.write_text(PACKAGE + "\n")
    return _executable(venv)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WireServer:
    """One server on a free 127.0.0.1 port, its data in memory; stopped by its PID.

    `retryWrites=false` in the URI: with retryable writes the server keeps a record of every
    write id, and after ~10,000 writes each write is ~10x slower."""

    def __init__(self, venv: Path = VENV):
        self.venv = venv
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="wire-server-", suffix=".log", delete=False)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false"

    def start(self) -> "WireServer":
        executable = ensure_installed(self.venv)
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = _free_port()
            self.process = subprocess.Popen(
                [str(executable), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", ":memory:",
                 "--log-level", "WARNING"],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # Ctrl-C in the terminal is for pytest, which stops it
            if self._wait_for_ping():
                return self
            self.stop()
        raise RuntimeError(f"the wire server did not answer ping; its log:\n{self.log_tail()}")

    def _wait_for_ping(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            client = MongoClient(self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
            try:
                client.admin.command("ping")
                return True
            except PyMongoError:
                time.sleep(0.2)
            finally:
                client.close()
        return False

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, so it removes its in-memory store's temporary directory; SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)

    def __enter__(self) -> "WireServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    with WireServer() as server:
        print(f"MONGODB_URI='{server.uri}'  (pid {server.process.pid}; Ctrl-C stops it)", flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
