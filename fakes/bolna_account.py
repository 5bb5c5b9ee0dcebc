"""One Bolna organisation as the fake holds it: its agents and executions, behind one API key.

Accounts are isolated as at Bolna: nothing here can see another account's records, and two
accounts may hold an execution with the same id. Executions are indexed per agent by created_at,
so a page costs a bisect plus the page itself even with 100k executions stored.
"""

from __future__ import annotations

import hashlib
import json
import threading
from bisect import bisect_left, bisect_right, insort
from datetime import datetime, timedelta, timezone
from typing import Callable

from fakes.bolna_api import ApiError, created_key, parse_int, parse_time, trim
from fakes.dataset import iso

MAX_PAGE_SIZE = 50
DEFAULT_PAGE_SIZE = 20
MAX_WINDOW = timedelta(days=7)


def key_label(api_key: str) -> str:
    """A short stand-in for a key in logs: tells accounts apart without revealing the key."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


class BolnaAccount:
    """An organisation's data and the test-facing ways to change it; safe to use from tests while
    the server answers from it (its own lock, so 500 accounts don't queue on one)."""

    def __init__(self, api_key: str, agents: list[dict], executions: list[dict], *,
                 label: str | None = None, clock: Callable[[], datetime] | None = None):
        self.api_key = api_key
        self.label = label or key_label(api_key)
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._agents = [dict(a) for a in agents]
        self._agent_ids = {str(a["id"]) for a in agents}
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

    def add_execution(self, execution: dict) -> None:
        record = dict(execution)
        with self._lock:
            if str(record["id"]) in self._executions:
                raise ValueError(f"execution {record['id']} already exists in {self.label}")
            self._store(record)

    def update_execution(self, execution_id: str, **fields) -> None:
        """Change a stored call, e.g. in-progress -> completed with its transcript.

        updated_at moves to now (Bolna's clock) unless given, as the real API does on every change.
        """
        fields.setdefault("updated_at", iso(self._clock()))
        with self._lock:
            old = self._executions[execution_id]
            entries = self._index[str(old["agent_id"])]
            del entries[bisect_left(entries, created_key(old, execution_id))]
            self._store({**old, **fields})

    def agent(self, agent_id: str) -> dict:
        """The agent as stored, with what a PATCH changed (e.g. `agent_config.webhook_url`)."""
        with self._lock:
            return json.loads(json.dumps(next(a for a in self._agents if str(a["id"]) == agent_id)))

    def ground_truth(self) -> dict[str, dict]:
        """Every execution the account holds now, by id (records served without an id left out):
        what a complete sync of this account must have stored."""
        with self._lock:
            return {key: dict(record) for key, record in self._executions.items()
                    if record.get("id") is not None}

    # -- what the endpoints read and write ------------------------------------------------------

    def agents(self) -> list[dict]:
        with self._lock:
            return [dict(a) for a in self._agents]

    def execution(self, execution_id: str) -> dict:
        with self._lock:
            execution = self._executions.get(execution_id)
        if execution is None:
            raise ApiError(404, f"Execution {execution_id} not found")
        return execution

    def patch_agent(self, agent_id: str, body: bytes) -> dict:
        """`PATCH /v2/agent/{id}`: Bolna merges the given `agent_config` keys into the agent's."""
        try:
            changes = json.loads(body)
        except ValueError:
            raise ApiError(400, "The body is not valid JSON") from None
        config = changes.get("agent_config") if isinstance(changes, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("webhook_url", ""), (str, type(None))):
            raise ApiError(422, "agent_config must be an object; webhook_url a string or null")
        with self._lock:
            agent = next((a for a in self._agents if str(a["id"]) == agent_id), None)
            if agent is None:
                raise ApiError(404, f"Agent {agent_id} not found")
            # A new dict, not an update in place: answers already handed out stay as they were.
            agent["agent_config"] = {**(agent.get("agent_config") or {}), **config}
        return {"message": "success", "state": "updated"}

    def list_executions(self, agent_id: str, query: dict[str, str], projection: str) -> dict:
        """`GET /v2/agent/{id}/executions`: one page, newest first, of the calls in [from, to]."""
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

        with self._lock:
            # An agent known only through its calls (a test serving records alone) is still found.
            if agent_id not in self._agent_ids and agent_id not in self._index:
                raise ApiError(404, f"Agent {agent_id} not found")
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
            "data": [trim(r) for r in records] if projection == "trimmed" else records,
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

    def _key(self, record: dict) -> str:
        if record.get("id") is None:
            return f"(no id #{len(self._executions)})"
        return str(record["id"])

    def _store(self, record: dict) -> None:
        key = self._key(record)
        self._executions[key] = record
        insort(self._index.setdefault(str(record["agent_id"]), []), created_key(record, key))
