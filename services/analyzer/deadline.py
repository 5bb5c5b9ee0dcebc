"""The batch deadline: a run must end well inside the sync interval, whatever the LLM does."""
from __future__ import annotations

import threading
import time


class DeadlineExceeded(Exception):
    """An attempt could not finish before the batch deadline; the call goes back to the queue."""


class Deadline:
    def __init__(self, seconds: float, stop: threading.Event | None = None):
        """`stop`: the daemon's shutdown signal, which ends the batch like its deadline does."""
        self._ends_at = time.monotonic() + seconds
        self._given_up = threading.Event()
        self._stop = stop or threading.Event()

    @property
    def reached(self) -> bool:
        return self._given_up.is_set() or self._stop.is_set() or time.monotonic() >= self._ends_at

    def remaining(self) -> float:
        return max(0.0, self._ends_at - time.monotonic())

    def request_timeout(self, limit: float) -> float:
        """How long the next request may take; raises once the deadline is reached."""
        if self.reached:
            raise DeadlineExceeded("the batch deadline was reached before the request")
        return min(limit, self.remaining())

    def sleep(self, seconds: float) -> None:
        """Wait before a retry, unless the wait would outlast the deadline. Then the whole batch
        gives up: the wait comes from the account's rate limit, which every other call shares."""
        if seconds >= self.remaining():
            self._given_up.set()
            raise DeadlineExceeded(f"waiting {seconds:.1f} s to retry would pass the batch deadline")
        if self._stop.wait(seconds):
            raise DeadlineExceeded("the daemon is stopping")
