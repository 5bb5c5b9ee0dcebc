"""Talking to Bolna: one pooled session, Bearer auth, timeouts, retries that respect the server,
and every request paced to Bolna's rate limits. Safe to share between threads.

A backfill fires faster than Bolna allows; pacing keeps it at the limit instead of buying 429s and
their waits. The windows are pyrate-limiter's sliding-window logs; waiting is ours, on the stop
Event, so a SIGTERM ends it at once.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Iterator

import requests
from pyrate_limiter import InMemoryBucket, Rate, RateItem
from tenacity import (Retrying, retry_if_exception, stop_after_attempt, stop_when_event_set,
                      wait_exponential_jitter)

from services.run_records import FatalError
from utils.clock import naive_utc, to_millis, utcnow
from utils.http import parse_retry_after
from utils.logging import Listeners

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 50
MAX_WINDOW = timedelta(days=7)  # `from`..`to` may span at most 7 days
# A `Date` header counts whole seconds: Bolna's clock cannot be told closer than this.
DATE_RESOLUTION = timedelta(seconds=1)
# A `Date` further than this from this machine's clock is not believed (a broken proxy, a bad
# answer): the listing's end would follow it, through years of empty windows, and so would the cursor.
MAX_CLOCK_SKEW = timedelta(days=1)
# A window holding more pages than this is an API that ignores `page_number` or never stops
# saying `has_more`: following it would make a run that never ends.
MAX_PAGES_PER_WINDOW = 2000


class BolnaError(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None, *,
                 sent: bool = False):
        """`sent`: the request went out (the retry loop counts its outcome)."""
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.sent = sent

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class BolnaAuthError(BolnaError, FatalError):
    """The key was refused: retrying cannot help, the run stops (and worker/app.py sets the
    account aside)."""
    run_error_code = "bolna_key_refused"  # a 401 or 403: never `retryable`


# The agent-scoped endpoints (an agent's listing, the agent itself, `/call`) under the lower limit.
_LISTING_PATHS = re.compile(r"^/v2/agent/(?!all$)[^/]+(/executions)?$|^/call$")
# A wait is re-checked at least this often: other threads take turns meanwhile.
_LONGEST_NAP = 1.0


def endpoint_class(path: str) -> str:
    return "listing" if _LISTING_PATHS.match(path) else "other"


@dataclass(frozen=True)
class Limits:
    # Bolna's documented limits, per minute and per organisation (/work/shared/bolna-api.md).
    listing_per_minute: int = 500
    other_per_minute: int = 1000
    headroom: float = 0.1  # the share of each limit left unused
    minute_seconds: float = 60.0  # shortened only by benchmarks, to time-scale a backfill


class Pacer:
    """One sliding window per endpoint class; `wait_turn` blocks until a request may go."""

    def __init__(self, limits: Limits = Limits()):
        # Buckets without a Limiter: a Limiter leaks its bucket from a thread of its own, and
        # this process may hold a pacer per key; we leak on our own turns instead.
        self._windows = {kind: InMemoryBucket(_rates(max(1, int(per_minute * (1 - limits.headroom))),
                                                     limits.minute_seconds))
                         for kind, per_minute in (("listing", limits.listing_per_minute),
                                                  ("other", limits.other_per_minute))}
        self._lock = threading.Lock()
        self.waited_seconds = 0.0  # time requests spent waiting for a turn

    def wait_turn(self, path: str, stop: threading.Event) -> None:
        """Raises BolnaError (the request not sent) when `stop` is set before the turn comes."""
        kind = endpoint_class(path)
        window = self._windows[kind]
        while True:
            if stop.is_set():
                raise BolnaError(f"Bolna request {path} not sent: stopped while waiting to request {kind}")
            with self._lock:
                now = window.now()
                decision = window.put_decision(RateItem(kind, now, 1))
                if decision.allowed:
                    if window.count() > 2 * window.rates[-1].limit:
                        window.leak(now)  # the entries older than the window
                    return
            wait_ms = decision.retry_after_ms if decision.retry_after_ms is not None else 10
            nap = min(_LONGEST_NAP, max(wait_ms, 1) / 1000)
            self.waited_seconds += nap
            stop.wait(nap)


def _rates(allowed: int, minute_seconds: float) -> list[Rate]:
    """The minute's allowance, spread over its sixtieths: a whole minute's worth sent in one
    burst would reach Bolna with the jitter of the network, and a request delayed less than
    one sent before it could make Bolna count one too many in its own window."""
    minute_ms = int(minute_seconds * 1000)
    per_tick = math.ceil(allowed / 60)
    if per_tick >= allowed or minute_ms < 60:
        return [Rate(allowed, minute_ms)]
    return [Rate(per_tick, minute_ms // 60), Rate(allowed, minute_ms)]


# The process's one pacer for a key: Bolna counts per organisation, so every client of one key
# (both jobs, a CLI command beside the daemon's jobs) shares one window.
_pacers: dict[tuple[str, str, Limits], Pacer] = {}
_pacers_lock = threading.Lock()


def iso(moment: datetime) -> str:
    """Naive UTC -> the API's `2026-06-07T00:00:00.000Z`."""
    return moment.isoformat(timespec="milliseconds") + "Z"


class BolnaClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, max_attempts: int = 5,
                 backoff_seconds: float = 1.0, max_wait: float = 60.0, page_size: int = MAX_PAGE_SIZE,
                 stop: threading.Event | None = None, max_pages_per_window: int = MAX_PAGES_PER_WINDOW,
                 limits: Limits = Limits(), connections: int = 10):
        """`stop`: once set, a retry wait or a wait for a turn ends at once and no further retry
        is made. `connections`: kept open to Bolna, one per request that may be in flight."""
        self.base_url = base_url.rstrip("/")
        with _pacers_lock:
            self.pacer = _pacers.setdefault((self.base_url, hashlib.sha256(api_key.encode()).hexdigest(), limits),
                                            Pacer(limits))
        self.max_pages_per_window = max_pages_per_window
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        # Bolna's clock less this machine's, as the last `Date` header said; None until one came.
        self.clock_offset: timedelta | None = None
        self.outcomes = Listeners("request_listener_failed")  # each request's outcome, for the metrics
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, connections))
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, adapter)
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
                   # Besides the full records, each job's listing read ahead and its written page's.
                   limits=limits, connections=settings.bolna_fetch_concurrency + 2 * 2)

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

    def _request(self, method: str, path: str, **request) -> tuple[object, datetime | None]:
        """(body, Bolna's time when it answered), under the retry loop; a failure given up is
        counted an `error`."""
        try:
            return self._retrying(self._attempt, method, path, request)
        except BolnaError as exc:
            self._count_failure(exc, "error")
            raise

    def _attempt(self, method: str, path: str, request: dict) -> tuple[object, datetime | None]:
        """One request, in its turn under the pace: a refused key raises BolnaAuthError, any
        other failure BolnaError (with Bolna's Retry-After, for the retry loop)."""
        shown = path if method == "GET" else f"{method} {path}"
        self.pacer.wait_turn(path, self.stop)
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **request)
        except requests.RequestException as exc:
            # Refused, reset, timed out, or a body cut off mid-way: all worth another try.
            raise BolnaError(f"Bolna request {shown} failed: {type(exc).__name__}", sent=True) from exc
        stamped = _date(response)
        if stamped is not None:
            self.clock_offset = stamped - utcnow()
        if response.status_code in (401, 403):
            raise BolnaAuthError(f"Bolna refused the API key (HTTP {response.status_code}) on {shown}",
                                 response.status_code, sent=True)
        if response.status_code == 429:
            self.outcomes("429")
        if response.status_code >= 400:
            raise BolnaError(f"Bolna answered HTTP {response.status_code} on {shown}: {_error_text(response)}",
                             response.status_code, parse_retry_after(response.headers.get("Retry-After")), sent=True)
        self.outcomes("ok")
        # The earliest Bolna's clock may have read what it answered: the `Date` it stamped once the
        # answer was ready, less the round trip; in milliseconds, as the listing's `to` is sent, so
        # a window never reaches past what was asked.
        served_at = None if stamped is None else to_millis(stamped - response.elapsed)
        try:
            return response.json(), served_at
        except ValueError:
            if method == "PATCH":
                return None, None  # a 2xx without a JSON body still applied the change
            raise BolnaError(f"Bolna sent a body that is not valid JSON on {path}") from None
        except RecursionError:  # nesting deeper than the parser's stack: not a page we can split
            raise BolnaError(f"Bolna sent a body nested too deep to read on {path}") from None

    def now(self) -> datetime:
        """Bolna's present by its last `Date` (up to a second and a round trip early, never late);
        this machine's clock until an answer came."""
        return utcnow() + (self.clock_offset or timedelta(0))

    def list_agents(self) -> list[dict]:
        agents, _ = self._request("GET", "/v2/agent/all")
        if not isinstance(agents, list):
            raise BolnaError("GET /v2/agent/all did not return a list", status=200)
        return [agent for agent in agents if isinstance(agent, dict) and agent.get("id")]

    def get_execution(self, execution_id: str) -> dict:
        record, _ = self._request("GET", f"/executions/{execution_id}")
        if not isinstance(record, dict):
            raise BolnaError(f"GET /executions/{execution_id} did not return an object", status=200)
        return record

    def set_webhook_url(self, agent_id: str, url: str) -> object:
        """`PATCH /v2/agent/{id}` with `agent_config.webhook_url`, as Bolna documents it; the same
        body again changes nothing, so it is retried like a read."""
        return self._request("PATCH", f"/v2/agent/{agent_id}", json={"agent_config": {"webhook_url": url}})[0]

    def iter_pages(self, agent_id: str, start: datetime, end: datetime | None = None) -> Iterator[WindowPage]:
        """Pages of one agent's executions created in [start, end], oldest 7-day window first (the
        API pages newest first within one). `end` None: up to Bolna's present by Bolna's clock, so
        a call is listed by the first run after it was made whatever this machine's clock says.

        Without an answer yet, Bolna's clock is unknown: the first window ends by this machine's (a
        second past `start` at least), and goes on up to Bolna's when its first page shows it ahead.
        A caller that stops iterating fetches nothing more."""
        guessed = end is None and self.clock_offset is None
        end = to_millis(self.now() if end is None else end)  # as `iso` sends it
        if guessed:
            end = max(end, start + DATE_RESOLUTION)
        window_start = start
        while window_start < end:
            window_end = min(window_start + MAX_WINDOW, end)
            first_served = None
            for page in self._window_pages(agent_id, window_start, window_end):
                first_served = first_served or page.served_at
                yield page
            window_start = window_end
            if guessed:
                guessed = False
                if first_served is not None and first_served - window_end > DATE_RESOLUTION:
                    end = max(end, first_served)

    def _window_pages(self, agent_id: str, start: datetime, end: datetime) -> Iterator[WindowPage]:
        read_through = end
        for page_number in range(1, self.max_pages_per_window + 1):
            page, served_at = self._request("GET", f"/v2/agent/{agent_id}/executions", params={
                "page_number": page_number, "page_size": self.page_size, "from": iso(start), "to": iso(end)})
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise BolnaError(f"executions page {page_number} of agent {agent_id} has no data list",
                                 status=200)
            more = _has_more(page.get("has_more"), agent_id, page_number) and bool(page["data"])
            # A call Bolna creates while the window is paged lands at the top of page 1, already
            # read: only what Bolna held when the earliest page was served was seen on every page.
            if served_at is not None:
                read_through = min(read_through, served_at)
            yield WindowPage(page["data"], not more, served_at, read_through)
            if not more:
                return
        raise BolnaError(f"agent {agent_id}: more than {self.max_pages_per_window} pages in one window "
                         f"({iso(start)} to {iso(end)}); the API keeps answering has_more", status=200)


class WindowPage(list):
    """A page of raw executions that knows whether it ends its time window, so the caller can
    move its cursor only past fully written windows. `served_at`: the earliest Bolna's clock may
    have read this page, None without a `Date`. `read_through`: how far every page of the window up
    to this one has seen, by Bolna's clock (`_window_pages`)."""

    def __init__(self, items: list, last: bool, served_at: datetime | None, read_through: datetime):
        super().__init__(items)
        self.last = last
        self.served_at = served_at
        self.read_through = read_through


def _date(response: requests.Response) -> datetime | None:
    """Bolna's time when it answered (its `Date` header, whole seconds); None without one, or
    with one past belief (`MAX_CLOCK_SKEW`)."""
    try:
        stamped = naive_utc(parsedate_to_datetime(response.headers["Date"]))
    except (KeyError, TypeError, ValueError):
        return None
    return stamped if abs(stamped - utcnow()) <= MAX_CLOCK_SKEW else None


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
        body = body.get("message") or body.get("detail") or body
    return str(body)[:200]
