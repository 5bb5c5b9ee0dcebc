"""A local fake of the Bolna API, served over real HTTP on 127.0.0.1.

It answers the endpoints callsync uses (see /work/shared/bolna-api.md) from in-memory records,
and can be told to misbehave (`inject`) so tests can exercise retries and error handling.
Executions are indexed per agent by created_at, so a page costs a bisect plus the page itself
even with 100k executions stored.
"""

from __future__ import annotations

import json
import re
import threading
import time
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import parse_qs, urlsplit


from fakes.bolna_api import ApiError, RateLimits, created_key, parse_int, parse_time, trim
from fakes.dataset import iso
from fakes.local_server import LocalServer, QuietHandler

MAX_PAGE_SIZE = 50
DEFAULT_PAGE_SIZE = 20
MAX_WINDOW = timedelta(days=7)

_EXECUTIONS_PATH = re.compile(r"^/v2/agent/([^/]+)/executions$")
_EXECUTION_PATH = re.compile(r"^/executions/([^/]+)$")
_AGENT_PATH = re.compile(r"^/v2/agent/([^/]+)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was dropped without an answer


@dataclass
class _Fault:
    pattern: re.Pattern
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
                 rate_limits: RateLimits | None = None):
        """`rate_limits`: Bolna's documented per-minute limits unless given (429 beyond them)."""
        if projection not in ("full", "trimmed"):
            raise ValueError(f"projection must be 'full' or 'trimmed', not {projection!r}")
        self.api_key = api_key
        self.projection = projection
        self.latency = latency
        self.rate_limits = rate_limits or RateLimits()
        # Bolna's clock against this machine's: its `Date` header and the `updated_at` it stamps.
        self.clock_offset = clock_offset
        self.requests: list[Request] = []
        super().__init__()
        self._agents = [dict(a) for a in agents]
        self._agent_ids = {str(a["id"]) for a in agents}
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._answer_actions: list[tuple[re.Pattern, Callable[[], None]]] = []
        # Keyed by id; a record without one (a malformed record a test serves) by a stand-in key.
        self._executions: dict[str, dict] = {}
        # agent_id -> [(created_at, key)] sorted ascending: pages are slices found by bisect.
        self._index: dict[str, list[tuple[datetime, str]]] = {}
        for execution in executions:
            record = dict(execution)
            key = self._key(record)
            self._executions[key] = record
            self._index.setdefault(str(record["agent_id"]), []).append(created_key(record, key))
        for entries in self._index.values():
            entries.sort()

    # -- state changes, for tests -------------------------------------------------------------

    def request_count(self, path_prefix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def add_execution(self, execution: dict) -> None:
        record = dict(execution)
        with self._lock:
            if str(record["id"]) in self._executions:
                raise ValueError(f"execution {record['id']} already exists")
            self._store(record)

    def update_execution(self, execution_id: str, **fields) -> None:
        """Change a stored call, e.g. in-progress -> completed with its transcript.

        updated_at moves to now unless given, as the real API does on every change.
        """
        fields.setdefault("updated_at", iso(self.now()))
        with self._lock:
            old = self._executions[execution_id]
            entries = self._index[str(old["agent_id"])]
            del entries[bisect_left(entries, created_key(old, execution_id))]
            self._store({**old, **fields})

    def agent(self, agent_id: str) -> dict:
        """The agent as stored, with what a PATCH changed (e.g. `agent_config.webhook_url`)."""
        with self._lock:
            return json.loads(json.dumps(next(a for a in self._agents if str(a["id"]) == agent_id)))

    def _patch_agent(self, path: str, body: bytes) -> dict:
        """`PATCH /v2/agent/{id}`: Bolna merges the given `agent_config` keys into the agent's."""
        match = _AGENT_PATH.match(path)
        if match is None or match.group(1) == "all":
            raise ApiError(404, f"No route for PATCH {path}")
        try:
            changes = json.loads(body)
        except ValueError:
            raise ApiError(400, "The body is not valid JSON") from None
        config = changes.get("agent_config") if isinstance(changes, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("webhook_url", ""), (str, type(None))):
            raise ApiError(422, "agent_config must be an object; webhook_url a string or null")
        with self._lock:
            agent = next((a for a in self._agents if str(a["id"]) == match.group(1)), None)
            if agent is None:
                raise ApiError(404, f"Agent {match.group(1)} not found")
            agent.setdefault("agent_config", {}).update(config)
        return {"message": "success", "state": "updated"}

    def now(self) -> datetime:
        """The time by Bolna's clock."""
        return datetime.now(timezone.utc) + self.clock_offset

    def ground_truth(self) -> dict[str, dict]:
        """Every execution the API holds now, by id (records served without an id left out):
        what a complete sync must have stored."""
        with self._lock:
            return {key: dict(record) for key, record in self._executions.items()
                    if record.get("id") is not None}

    def on_answer(self, path_regex: str, action: Callable[[], None]) -> None:
        """Run `action` once, when the answer to the next request matching `path_regex` is ready but
        not yet sent (so the client cannot ask again first): e.g. a call appears between two pages."""
        with self._lock:
            self._answer_actions.append((re.compile(path_regex), action))

    def inject(self, path_regex: str, *, status: int = 500, times: int = 1,
               retry_after: float | None = None, delay: float = 0.0, body: bytes | None = None,
               truncate: bool = False, drop_connection: bool = False) -> None:
        """Make the next `times` requests whose path matches `path_regex` (re.search) misbehave.

        After sleeping `delay`: drop_connection closes the socket unanswered; truncate sends a 200
        whose Content-Length promises the whole page but only half arrives; body sends those raw
        bytes as a 200; otherwise a status >= 400 answers with an error body (and Retry-After when
        given), while a status < 400 answers normally, so `delay` alone makes a slow success.
        """
        with self._lock:
            self._faults.append(_Fault(re.compile(path_regex), times, status, retry_after, delay,
                                       body, truncate, drop_connection))

    def clear_faults(self) -> None:
        """The API recovers: every injected fault still waiting is dropped."""
        with self._lock:
            self._faults.clear()

    def _key(self, record: dict) -> str:
        if record.get("id") is None:
            return f"(no id #{len(self._executions)})"
        return str(record["id"])

    def _store(self, record: dict) -> None:
        key = self._key(record)
        self._executions[key] = record
        insort(self._index.setdefault(str(record["agent_id"]), []), created_key(record, key))

    def _take_answer_action(self, path: str) -> Callable[[], None] | None:
        with self._lock:
            for entry in self._answer_actions:
                if entry[0].search(path):
                    self._answer_actions.remove(entry)
                    return entry[1]
        return None

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- endpoints ------------------------------------------------------------------------------

    def _answer(self, path: str, query: dict[str, str]) -> object:
        """The JSON answer for an authorised GET; raises ApiError for error answers."""
        with self._lock:
            if path == "/v2/agent/all":
                return self._agents
            match = _EXECUTIONS_PATH.match(path)
            if match:
                return self._list_executions(match.group(1), query)
            match = _EXECUTION_PATH.match(path)
            if match:
                execution = self._executions.get(match.group(1))
                if execution is None:
                    raise ApiError(404, f"Execution {match.group(1)} not found")
                return execution
        raise ApiError(404, f"No route for {path}")

    def _list_executions(self, agent_id: str, query: dict[str, str]) -> dict:
        if agent_id not in self._agent_ids and agent_id not in self._index:
            raise ApiError(404, f"Agent {agent_id} not found")
        start = parse_time("from", query.get("from"))
        end = parse_time("to", query.get("to"))
        if start > end:
            raise ApiError(400, "'from' must not be after 'to'")
        if end - start > MAX_WINDOW:
            raise ApiError(400, "The range between 'from' and 'to' must not exceed 7 days")
        page_number = parse_int("page_number", query.get("page_number"), 1)
        page_size = parse_int("page_size", query.get("page_size"), DEFAULT_PAGE_SIZE)
        if page_number < 1:
            raise ApiError(400, "'page_number' must be at least 1")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ApiError(400, f"'page_size' must be between 1 and {MAX_PAGE_SIZE}")

        entries = self._index.get(agent_id, [])
        low = bisect_left(entries, start, key=lambda e: e[0])
        high = bisect_right(entries, end, key=lambda e: e[0])
        offset = (page_number - 1) * page_size
        filters = {k: query[k] for k in ("status", "call_type") if k in query}
        if filters:
            # Filters need a scan of the window; unfiltered paging below only slices it.
            matching = [e for e in reversed(entries[low:high]) if self._matches(e[1], filters)]
            total = len(matching)
            page = matching[offset:offset + page_size]
        else:
            total = high - low
            page_end = max(high - offset, low)
            page = entries[max(page_end - page_size, low):page_end][::-1]
        records = [self._executions[execution_id] for _, execution_id in page]
        return {
            "data": [trim(r) for r in records] if self.projection == "trimmed" else records,
            "total": total,
            "has_more": offset + len(page) < total,
            "page_number": page_number,
            "page_size": page_size,
        }

    def _matches(self, execution_id: str, filters: dict[str, str]) -> bool:
        execution = self._executions[execution_id]
        actual = {"status": execution.get("status"),
                  "call_type": (execution.get("telephony_data") or {}).get("call_type")}
        return all(actual[name] == wanted for name, wanted in filters.items())


class _Handler(QuietHandler):
    def date_time_string(self, timestamp: float | None = None) -> str:
        fake: FakeBolna = self.server.fake
        return super().date_time_string(time.time() + fake.clock_offset.total_seconds() if timestamp is None
                                        else timestamp)

    def do_GET(self) -> None:
        fake: FakeBolna = self.server.fake
        url = urlsplit(self.path)
        self._path = url.path
        self._query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self._serve(fake, self._path, self._query)

    def do_PATCH(self) -> None:
        fake: FakeBolna = self.server.fake
        self._method, self._path, self._query = "PATCH", urlsplit(self.path).path, {}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._send_json(403, {"detail": "Invalid API key"})
        try:
            return self._send_json(200, fake._patch_agent(self._path, body))
        except ApiError as error:
            return self._send_json(error.status, {"error": error.status, "message": error.message})

    def _serve(self, fake: FakeBolna, path: str, query: dict[str, str]) -> None:
        # Counted on arrival, per key (an organisation's limits), before the answer's latency.
        wait = fake.rate_limits.admit(self.headers.get("Authorization", ""), path)
        if fake.latency:
            time.sleep(fake.latency)
        if wait is not None:
            return self._send_json(429, {"error": 429, "message": "Rate limit exceeded"},
                                   {"Retry-After": f"{wait:.3f}"})
        fault = fake._take_fault(path)
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

        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._send_json(403, {"detail": "Invalid API key"})
        try:
            answer = fake._answer(path, query)
        except ApiError as error:
            return self._send_json(error.status, {"error": error.status, "message": error.message})
        body = json.dumps(answer).encode()
        action = fake._take_answer_action(path)
        if action:
            action()
        if fault and fault.truncate:
            self.close_connection = True
            return self._send(200, body[: len(body) // 2], content_length=len(body))
        return self._send(200, body)

    def _log(self, status: int) -> None:
        fake: FakeBolna = self.server.fake
        with fake._lock:
            fake.requests.append(Request(getattr(self, "_method", "GET"), self._path, self._query, status))

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
