"""Replica processes (`main.py run`) for the fleet benchmark: started with the env a deployment
would give them, stopped as a supervisor stops them (SIGTERM, then SIGKILL if it hangs), and their
CPU time read from /proc, since on a shared 2-core machine CPU seconds carry over better than wall
seconds."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 40  # the daemon finishes its current account first (worker/daemon.py)


class Replica:
    def __init__(self, env: dict[str, str]):
        # /healthz as a Kubernetes probe would see it (docs/scaling.md): each replica on its own port.
        self.health_port = _free_port()
        env = {**env, "HEALTH_PORT": str(self.health_port)}
        self.log = tempfile.NamedTemporaryFile(prefix="fleet-replica-", suffix=".log", delete=False)
        # Its own session: a Ctrl-C in the terminal reaches the benchmark, whose finally stops it.
        self.process = subprocess.Popen([sys.executable, "main.py", "run"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.process.pid
        self.killed = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a replica that dies without a word, as on a lost host or an OOM kill."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.killed = True

    def stop(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def health(self) -> dict:
        """/healthz: {"code": 200 or 503, "reasons": [...]}; code 0 when it does not answer."""
        try:
            with urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as answer:
                return {"code": answer.status, "reasons": json.loads(answer.read()).get("reasons", [])}
        except HTTPError as exc:
            return {"code": exc.code, "reasons": json.loads(exc.read() or b"{}").get("reasons", [])}
        except (URLError, OSError):
            return {"code": 0, "reasons": ["no answer"]}

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)


def replica_env(uri: str, database: str, bolna_url: str, *, poll: int, lease: int, concurrency: int) -> dict:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": database, "BOLNA_BASE_URL": bolna_url,
           "ACCOUNT_SOURCE": "mongodb", "SYNC_INTERVAL_MINUTES": "1", "ACCOUNT_POLL_SECONDS": str(poll),
           "ACCOUNT_LEASE_SECONDS": str(lease), "ACCOUNT_CONCURRENCY": str(concurrency),
           "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
    # No Groq key (the offline heuristic), no listener, no single-account key: what a replica of
    # many accounts runs with, not whatever this shell happens to export.
    for name in ("GROQ_API_KEY", "BOLNA_API_KEY", "WEBHOOK_PORT", "WEBHOOK_TOKEN",
                 "BOLNA_AGENT_IDS", "LLM_GLOBAL_LIMIT"):
        env[name] = ""
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process (its own threads), from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
