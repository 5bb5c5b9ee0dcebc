"""Shared builders for the job tests: sample executions and a Runtime wired to local fakes."""
from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone

from fakes.dataset import iso
from fakes.mongo_hooks import HookedClient, no_hook
from services.analyzer.claims import CallQueue
from services.database import CALLS
from worker.app import Runtime

AGENT = {"id": "agent-1", "agent_name": "Sales", "agent_status": "processed"}
_ids = itertools.count(1)


def wait_until(condition, timeout: float = 30.0) -> None:
    """Until `condition()` holds: what a background thread does is waited for, never slept on."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "not reached in time"
        time.sleep(0.02)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def execution(customer="+91 98765 43210", *, minutes_ago=30, agent_id="agent-1", status="completed",
              direction="outbound", extracted=None, transcript="assistant: Hello\nuser: I want to book a visit\n",
              call_id=None, **extra) -> dict:
    created = now_utc() - timedelta(minutes=minutes_ago)
    terminal = status not in ("in-progress", "queued", "ringing", "initiated")
    numbers = {"to_number": customer, "from_number": "+918045671234"}
    if direction == "inbound":
        numbers = {"to_number": "+918045671234", "from_number": customer}
    record = {
        "id": call_id or f"call-{next(_ids):05d}", "agent_id": agent_id, "status": status,
        "conversation_duration": 40.0 if terminal and status == "completed" else 0.0,
        "total_cost": 2.5, "created_at": iso(created),
        "updated_at": iso(created + timedelta(minutes=3 if terminal else 0)),
        "transcript": transcript if terminal else None,
        "extracted_data": extracted if extracted is not None else ({"name": "Ravi"} if terminal else None),
        "telephony_data": {**numbers, "call_type": direction, "duration": "40",
                           "recording_url": "https://rec/1.mp3"},
    }
    record.update(extra)
    return record


def build_app(settings, mongo, bolna, hook=no_hook) -> Runtime:
    """A prepared Runtime on the mongomock client `mongo` and the fake `bolna`. Each MongoDB operation
    passes `hook` first and runs whole under one lock, as on a server (the jobs share mongomock
    across threads)."""
    app = Runtime.build(settings.with_overrides(bolna_base_url=bolna.base_url),
                        mongo_client=HookedClient(mongo, hook))
    app.prepare()
    return app


def requeue(db, **selector) -> int:
    """`main.py reanalyze`'s requeue, as another process would run it."""
    return CallQueue(db[CALLS], "reanalyze:1:a", lease_seconds=60).requeue(**selector)
