"""Bolna REST client: one pooled session, Bearer auth, timeouts, retries that respect the server,
and every request paced to Bolna's rate limits (`services/bolna_pacing.py`). Safe to share
between threads."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Iterator

import requests
from tenacity import (Retrying, retry_if_exception, stop_after_attempt, stop_when_event_set,
                      wait_exponential_jitter)

from services.bolna_pacing import Limits, PacingStopped, pacer_for
from services.request_outcomes import RequestOutcomes
from utils.clock import naive_utc
from utils.http import parse_retry_after

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 50
# Requests of one job besides its full records: a listing read ahead and one written page's.
LISTINGS_IN_FLIGHT = 2
MAX_WINDOW = timedelta(days=7)  # `from`..`to` may span at most 7 days
# A window holding more pages than this is an API that ignores `page_number` or never stops
# saying `has_more`: following it would make a run that never ends.
MAX_PAGES_PER_WINDOW = 2000
# The code a run records when Bolna refused the key.
KEY_REFUSED = "bolna_key_refused"


class BolnaError(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None, *,
                 sent: bool = False):
        """`sent`: the failure of a request that went out (its outcome is counted once it is known
        whether another attempt follows)."""
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.sent = sent

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class BolnaAuthError(BolnaError):
    """The key was refused: retrying cannot help, the run stops."""
    run_error_code = KEY_REFUSED  # what a failed run records: the account is set aside (worker/tenants.py)

    @property
    def retryable(self) -> bool:
        return False


def iso(moment: datetime) -> str:
    """Naive UTC -> the API's `2026-06-07T00:00:00.000Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class BolnaClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, max_attempts: int = 5,
                 backoff_seconds: float = 1.0, max_wait: float = 60.0, page_size: int = MAX_PAGE_SIZE,
                 session: requests.Session | None = None, stop: threading.Event | None = None,
                 max_pages_per_window: int = MAX_PAGES_PER_WINDOW, limits: Limits = Limits(),
                 connections: int = 10):
        """`stop`: once set, a retry wait or a wait for a turn ends at once and no further retry
        is made. `connections`: kept open to Bolna, one per request that may be in flight."""
        self.base_url = base_url.rstrip("/")
        self.pacer = pacer_for(self.base_url, api_key, limits)
        self._count_lock = threading.Lock()
        self.rate_limited = 0  # 429 answers met: pacing keeps this at 0 in normal operation
        self.max_pages_per_window = max_pages_per_window
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self.requests_made = 0
        self.outcomes = RequestOutcomes()  # each request's outcome, for the metrics
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, connections))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self.session.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})
        exponential = wait_exponential_jitter(multiplier=backoff_seconds, max=max_wait, jitter=backoff_seconds)

        def wait(retry_state) -> float:
            exc = retry_state.outcome.exception()
            if isinstance(exc, BolnaError) and exc.retry_after is not None:
                return min(exc.retry_after, max_wait)
            return exponential(retry_state)

        self._retrying = Retrying(stop=stop_after_attempt(max_attempts) | stop_when_event_set(self.stop),
                                  wait=wait, sleep=self.stop.wait,
                                  retry=retry_if_exception(lambda exc: isinstance(exc, BolnaError) and exc.retryable),
                                  reraise=True, before_sleep=self._log_retry)

    @classmethod
    def from_settings(cls, settings, stop: threading.Event | None = None) -> "BolnaClient":
        limits = Limits(settings.bolna_listing_rate_per_minute, settings.bolna_rate_per_minute,
                        settings.bolna_rate_headroom)
        return cls(settings.bolna_base_url, settings.bolna_api_key or "",
                   timeout=settings.http_timeout_seconds, max_attempts=settings.http_max_attempts,
                   backoff_seconds=settings.http_backoff_seconds, page_size=settings.bolna_page_size, stop=stop,
                   limits=limits, connections=settings.bolna_fetch_concurrency + 2 * LISTINGS_IN_FLIGHT)

    def close(self) -> None:
        self.session.close()

    def _log_retry(self, retry_state) -> None:
        exc = retry_state.outcome.exception()
        self._count_failure(exc, "retried")
        log.warning("Bolna request failed (%s); retry %d in %.1fs", exc,
                    retry_state.attempt_number, retry_state.next_action.sleep)

    def _count_failure(self, exc: BaseException, outcome: str) -> None:
        # A 429 was counted as such when it came; a request never sent is no request.
        if isinstance(exc, BolnaError) and exc.sent and exc.status != 429:
            self.outcomes(outcome)

    def _retried(self, attempt, *args):
        """`attempt(*args)` under the retry loop; a failure given up is counted an `error`."""
        try:
            return self._retrying(attempt, *args)
        except BolnaError as exc:
            self._count_failure(exc, "error")
            raise

    def _get(self, path: str, params: dict | None = None):
        return self._get_served(path, params)[0]

    def _get_served(self, path: str, params: dict | None = None) -> tuple[object, datetime | None]:
        """(body, Bolna's time when it answered), retried as every request is."""
        return self._retried(self._get_once, path, params)

    def _get_once(self, path: str, params: dict | None):
        response = self._send("GET", path, params=params)
        try:
            return response.json(), _served_at(response)
        except ValueError:
            raise BolnaError(f"Bolna sent a body that is not valid JSON on {path}") from None

    def _send(self, method: str, path: str, **request) -> requests.Response:
        """One request, in its turn under the pace: a refused key raises BolnaAuthError, any
        other failure BolnaError (with Bolna's Retry-After, for the retry loop)."""
        shown = path if method == "GET" else f"{method} {path}"
        try:
            self.pacer.wait_turn(path, self.stop)
        except PacingStopped as exc:
            raise BolnaError(f"Bolna request {shown} not sent: {exc}") from None
        with self._count_lock:
            self.requests_made += 1
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **request)
        except requests.RequestException as exc:
            # Refused, reset, timed out, or a body cut off mid-way: all worth another try.
            raise BolnaError(f"Bolna request {shown} failed: {type(exc).__name__}", sent=True) from exc
        if response.status_code in (401, 403):
            raise BolnaAuthError(f"Bolna refused the API key (HTTP {response.status_code}) on {shown}",
                                 response.status_code, sent=True)
        if response.status_code == 429:
            with self._count_lock:
                self.rate_limited += 1
            self.outcomes("429")
        if response.status_code >= 400:
            raise BolnaError(f"Bolna answered HTTP {response.status_code} on {shown}: {_error_text(response)}",
                             response.status_code, parse_retry_after(response.headers.get("Retry-After")), sent=True)
        self.outcomes("ok")
        return response

    def list_agents(self) -> list[dict]:
        agents = self._get("/v2/agent/all")
        if not isinstance(agents, list):
            raise BolnaError("GET /v2/agent/all did not return a list", status=200)
        return [agent for agent in agents if isinstance(agent, dict) and agent.get("id")]

    def get_execution(self, execution_id: str) -> dict:
        record = self._get(f"/executions/{execution_id}")
        if not isinstance(record, dict):
            raise BolnaError(f"GET /executions/{execution_id} did not return an object", status=200)
        return record

    def set_webhook_url(self, agent_id: str, url: str) -> object:
        """`PATCH /v2/agent/{id}` with `agent_config.webhook_url`, as Bolna documents it; the same
        body again changes nothing, so it is retried like a read."""
        return self._retried(self._patch_once, f"/v2/agent/{agent_id}", {"agent_config": {"webhook_url": url}})

    def _patch_once(self, path: str, body: dict) -> object:
        response = self._send("PATCH", path, json=body)
        try:
            return response.json()
        except ValueError:
            return None  # a 2xx without a JSON body still applied the change

    def iter_pages(self, agent_id: str, start: datetime, end: datetime) -> Iterator[list]:
        """Pages of one agent's executions created in [start, end], one 7-day window after
        another, oldest window first (the API pages newest first within a window).

        Yields lists of raw records; a caller that stops iterating fetches nothing more."""
        window_start = start
        while window_start < end:
            window_end = min(window_start + MAX_WINDOW, end)
            yield from self._window_pages(agent_id, window_start, window_end)
            window_start = window_end

    def _window_pages(self, agent_id: str, start: datetime, end: datetime) -> Iterator[list]:
        for page_number in range(1, self.max_pages_per_window + 1):
            page, served_at = self._get_served(f"/v2/agent/{agent_id}/executions", {
                "page_number": page_number, "page_size": self.page_size, "from": iso(start), "to": iso(end)})
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise BolnaError(f"executions page {page_number} of agent {agent_id} has no data list",
                                 status=200)
            more = _has_more(page.get("has_more"), agent_id, page_number) and bool(page["data"])
            yield WindowPage(page["data"], end, last=not more, served_at=served_at)
            if not more:
                return
        raise BolnaError(f"agent {agent_id}: more than {self.max_pages_per_window} pages in one window "
                         f"({iso(start)} to {iso(end)}); the API keeps answering has_more", status=200)


class WindowPage(list):
    """A page of raw executions that knows its time window and whether it ends the window,
    so the caller can move its cursor only past fully written windows. `served_at`: Bolna's own
    time when it answered (its `Date` header), None when it sent none."""

    def __init__(self, items: list, window_end: datetime, last: bool, served_at: datetime | None = None):
        super().__init__(items)
        self.window_end = window_end
        self.last = last
        self.served_at = served_at

    @property
    def read_through(self) -> datetime:
        """How far the page saw, by Bolna's clock: a window reaching past Bolna's "now" (a local
        clock ahead of it) has not seen calls Bolna creates until the window's end."""
        return self.window_end if self.served_at is None else min(self.window_end, self.served_at)


def _served_at(response: requests.Response) -> datetime | None:
    try:
        return naive_utc(parsedate_to_datetime(response.headers["Date"]))
    except (KeyError, TypeError, ValueError):
        return None


def _has_more(value: object, agent_id: str, page_number: int) -> bool:
    """`has_more` read strictly: "false" (a string) is false, and a value that says neither is an
    error rather than a guess (guessing false would move the cursor past unread pages)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BolnaError(f"executions page {page_number} of agent {agent_id}: has_more is {value!r}", status=200)


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:200]
    return str(body)[:200]
