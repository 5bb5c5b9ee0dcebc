"""A local fake of the Bolna API, served over real HTTP on 127.0.0.1.

It answers the endpoints callsync uses (see /work/shared/bolna-api.md) from in-memory records,
and can be told to misbehave (`inject`) so tests can exercise retries and error handling. It can
serve many organisations (`add_account`), each behind its own API key with its own agents,
executions and rate limits; the key in `Authorization` picks the account, as at Bolna.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from fakes.bolna_account import BolnaAccount
from fakes.bolna_api import ApiError, RateLimits
from fakes.local_server import LocalServer, QuietHandler

_EXECUTIONS_PATH = re.compile(r"^/v2/agent/([^/]+)/executions$")
_EXECUTION_PATH = re.compile(r"^/executions/([^/]+)$")
_AGENT_PATH = re.compile(r"^/v2/agent/([^/]+)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was dropped without an answer
    account: str | None = None  # the label of the account whose key was sent; None for no known key


@dataclass
class _Fault:
    pattern: re.Pattern
    api_key: str | None
    remaining: int
    status: int
    retry_after: float | None
    delay: float
    body: bytes | None
    truncate: bool
    drop_connection: bool


class FakeBolna(LocalServer):
    thread_name = "fake-bolna"

    def __init__(self, agents: list[dict], executions: list[dict], *, api_key: str = "test-key",
                 projection: str = "full", latency: float = 0.0, clock_offset: timedelta = timedelta(0),
                 rate_limits: RateLimits | None = None, label: str | None = None):
        """Serves one account (`api_key`'s, named `label` in the request log) until `add_account`
        adds more.

        `rate_limits`: Bolna's documented per-minute limits unless given (429 beyond them), counted
        per key, so each account has its own minute as each organisation has at Bolna.
        """
        if projection not in ("full", "trimmed"):
            raise ValueError(f"projection must be 'full' or 'trimmed', not {projection!r}")
        self.projection = projection
        self.latency = latency
        self.rate_limits = rate_limits or RateLimits()
        # Bolna's clock against this machine's: its `Date` header and the `updated_at` it stamps.
        self.clock_offset = clock_offset
        self.requests: list[Request] = []
        super().__init__()
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._answer_actions: list[tuple[re.Pattern, str | None, Callable[[], None]]] = []
        self._request_actions: list[tuple[re.Pattern, str | None, Callable[[], None]]] = []
        self._default = BolnaAccount(api_key, agents, executions, label=label, clock=self.now)
        self._accounts: dict[str, BolnaAccount] = {api_key: self._default}

    @classmethod
    def serving(cls, accounts, **options) -> FakeBolna:
        """A fake serving every account of `accounts` (e.g. from `fakes.dataset.accounts_dataset`:
        objects with api_key, label, agents, executions); the first is the default account."""
        first, *rest = accounts
        fake = cls(first.agents, first.executions, api_key=first.api_key, label=first.label, **options)
        for account in rest:
            fake.add_account(account.api_key, account.agents, account.executions, label=account.label)
        return fake

    # -- accounts -------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The default account's key; assigning it re-keys that account (the key was revoked)."""
        return self._default.api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        with self._lock:
            if value in self._accounts and self._accounts[value] is not self._default:
                raise ValueError("another account already has that key")
            del self._accounts[self._default.api_key]
            self._default.api_key = value
            self._accounts[value] = self._default

    def add_account(self, api_key: str, agents: list[dict], executions: list[dict], *,
                    label: str | None = None) -> BolnaAccount:
        """Serve another organisation; returns it, for its add_execution, update_execution, agent
        and ground_truth. `label` names it in the request log (default: a hash of the key)."""
        account = BolnaAccount(api_key, agents, executions, label=label, clock=self.now)
        with self._lock:
            if api_key in self._accounts:
                raise ValueError(f"an account with that key exists already ({self._accounts[api_key].label})")
            if any(a.label == account.label for a in self._accounts.values()):
                raise ValueError(f"an account labelled {account.label!r} exists already")
            self._accounts[api_key] = account
        return account

    def account(self, api_key: str | None = None) -> BolnaAccount:
        """The account behind `api_key`; the default account without one."""
        with self._lock:
            return self._default if api_key is None else self._accounts[api_key]

    # -- state changes, for tests (the default account's; `account(key)` has the same) ----------

    def add_execution(self, execution: dict) -> None:
        self._default.add_execution(execution)

    def update_execution(self, execution_id: str, **fields) -> None:
        """Change a stored call; updated_at moves to now unless given, as the real API does."""
        self._default.update_execution(execution_id, **fields)

    def agent(self, agent_id: str) -> dict:
        return self._default.agent(agent_id)

    def ground_truth(self) -> dict[str, dict]:
        return self._default.ground_truth()

    def request_count(self, path_prefix: str = "", *, api_key: str | None = None) -> int:
        """Requests logged under `path_prefix`; only those sent with `api_key`'s account when given."""
        label = self.account(api_key).label if api_key is not None else None
        with self._lock:
            return sum(1 for r in self.requests
                       if r.path.startswith(path_prefix) and (label is None or r.account == label))

    def now(self) -> datetime:
        """The time by Bolna's clock."""
        return datetime.now(timezone.utc) + self.clock_offset

    def on_answer(self, path_regex: str, action: Callable[[], None], *, api_key: str | None = None) -> None:
        """Run `action` once, when the answer to the next request matching `path_regex` (and sent with
        `api_key`, when given) is ready but not yet sent (so the client cannot ask again first): e.g.
        a call appears between two pages."""
        with self._lock:
            self._answer_actions.append((re.compile(path_regex), api_key, action))

    def on_request(self, path_regex: str, action: Callable[[], None], *, api_key: str | None = None) -> None:
        """Run `action` once, when the next request matching `path_regex` (and sent with `api_key`,
        when given) has arrived and before its answer is computed: e.g. a call appears, or time
        passes, between two pages, so that this page already lists what changed."""
        with self._lock:
            self._request_actions.append((re.compile(path_regex), api_key, action))

    def clear_actions(self, *, api_key: str | None = None) -> None:
        """Drop the `on_answer` and `on_request` actions still waiting (only those of `api_key`'s
        account when given)."""
        with self._lock:
            for actions in (self._answer_actions, self._request_actions):
                actions[:] = [entry for entry in actions if api_key is not None and entry[1] != api_key]

    def inject(self, path_regex: str, *, status: int = 500, times: int = 1,
               retry_after: float | None = None, delay: float = 0.0, body: bytes | None = None,
               truncate: bool = False, drop_connection: bool = False, api_key: str | None = None) -> None:
        """Make the next `times` requests whose path matches `path_regex` (re.search) misbehave:
        whatever key they carry (an outage), or only those sent with `api_key`.

        After sleeping `delay`: drop_connection closes the socket unanswered; truncate sends a 200
        whose Content-Length promises the whole page but only half arrives; body sends those raw
        bytes as a 200; otherwise a status >= 400 answers with an error body (and Retry-After when
        given), while a status < 400 answers normally, so `delay` alone makes a slow success.
        """
        with self._lock:
            self._faults.append(_Fault(re.compile(path_regex), api_key, times, status, retry_after, delay,
                                       body, truncate, drop_connection))

    def clear_faults(self) -> None:
        """The API recovers: every injected fault still waiting is dropped."""
        with self._lock:
            self._faults.clear()

    # -- serving ----------------------------------------------------------------------------------

    def _account_for(self, authorization: str) -> BolnaAccount | None:
        scheme, _, key = authorization.partition(" ")
        with self._lock:
            return self._accounts.get(key) if scheme == "Bearer" else None

    def _take_answer_action(self, path: str, api_key: str | None) -> Callable[[], None] | None:
        return self._take_action(self._answer_actions, path, api_key)

    def _take_request_action(self, path: str, api_key: str | None) -> Callable[[], None] | None:
        return self._take_action(self._request_actions, path, api_key)

    def _take_action(self, actions: list, path: str, api_key: str | None) -> Callable[[], None] | None:
        with self._lock:
            for entry in actions:
                if entry[0].search(path) and entry[1] in (None, api_key):
                    actions.remove(entry)
                    return entry[2]
        return None

    def _take_fault(self, path: str, api_key: str | None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.pattern.search(path) and fault.api_key in (None, api_key):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, account: BolnaAccount, path: str, query: dict[str, str], patch: bytes | None) -> object:
        """The JSON answer for an authorised GET (or PATCH with its body); raises ApiError for error
        answers."""
        if patch is not None:
            match = _AGENT_PATH.match(path)
            if match is None or match.group(1) == "all":
                raise ApiError(404, f"No route for PATCH {path}")
            return account.patch_agent(match.group(1), patch)
        if path == "/v2/agent/all":
            return account.agents()
        match = _EXECUTIONS_PATH.match(path)
        if match:
            return account.list_executions(match.group(1), query, self.projection)
        match = _EXECUTION_PATH.match(path)
        if match:
            return account.execution(match.group(1))
        raise ApiError(404, f"No route for {path}")


class _Handler(QuietHandler):
    def date_time_string(self, timestamp: float | None = None) -> str:
        fake: FakeBolna = self.server.fake
        return super().date_time_string(time.time() + fake.clock_offset.total_seconds() if timestamp is None
                                        else timestamp)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._method, self._path = "GET", url.path
        self._query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self._serve(None)

    def do_PATCH(self) -> None:
        self._method, self._path, self._query = "PATCH", urlsplit(self.path).path, {}
        self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _serve(self, patch_body: bytes | None) -> None:
        fake: FakeBolna = self.server.fake
        path, authorization = self._path, self.headers.get("Authorization", "")
        account = fake._account_for(authorization)
        self._account = account.label if account else None
        api_key = account.api_key if account else None
        # Counted on arrival, per key (an organisation's limits), before the answer's latency.
        wait = fake.rate_limits.admit(authorization, path)
        if fake.latency:
            time.sleep(fake.latency)
        if wait is not None:
            return self._send_json(429, {"error": 429, "message": "Rate limit exceeded"},
                                   {"Retry-After": f"{wait:.3f}"})
        fault = fake._take_fault(path, api_key)
        if fault:
            time.sleep(fault.delay)
            if fault.drop_connection:
                self._log(0)
                self.close_connection = True
                return
            if fault.body is not None:
                return self._send(200, fault.body)
            if fault.status >= 400 and not fault.truncate:
                headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                return self._send_json(fault.status, {"error": fault.status, "message": "Injected fault"},
                                       headers)

        if account is None:
            return self._send_json(403, {"detail": "Invalid API key"})
        if (before := fake._take_request_action(path, api_key)) is not None:
            before()
        try:
            answer = fake._answer(account, path, self._query, patch_body)
        except ApiError as error:
            return self._send_json(error.status, {"error": error.status, "message": error.message})
        body = json.dumps(answer).encode()
        action = fake._take_answer_action(path, api_key)
        if action:
            action()
        if fault and fault.truncate:
            self.close_connection = True
            return self._send(200, body[: len(body) // 2], content_length=len(body))
        return self._send(200, body)

    def _log(self, status: int) -> None:
        fake: FakeBolna = self.server.fake
        with fake._lock:
            fake.requests.append(Request(self._method, self._path, self._query, status, self._account))

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _send(self, status: int, body: bytes, *, headers: dict[str, str] | None = None,
              content_length: int | None = None) -> None:
        # Logged before answering, so a client that has its answer also finds it in `requests`.
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


FakeBolna.handler = _Handler
