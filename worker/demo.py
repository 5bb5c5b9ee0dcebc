"""`main.py demo`: the real jobs, over real HTTP, against a bundled data set served by a local
fake Bolna API, writing to an in-memory MongoDB. Needs no keys and no server."""
from __future__ import annotations

import json
import logging

from fakes.bolna_server import FakeBolna
from fakes.demo_crm import DEMO_PIPELINE, worked_contacts
from fakes.demo_dataset import demo_dataset
from fakes.mongo_hooks import HookedClient
from services.database import ACTIVITIES, CALLS, CONTACTS, CUSTOMERS, PIPELINES
from utils.clock import utcnow
from utils.config import Settings
from utils.table import format_table
from worker.app import JOB_NAMES, Runtime

DEMO_KEY = "demo-key"


def run_demo(settings: Settings) -> int:
    if settings.log_level != "DEBUG":
        # The demo prints each run's errors itself; log lines would only repeat them.
        logging.getLogger().setLevel(logging.ERROR)
    agents, executions = demo_dataset()
    with FakeBolna(agents, executions, api_key=DEMO_KEY, projection="trimmed") as bolna:
        demo_settings = settings.with_overrides(
            mongodb_db="callsync_demo", bolna_base_url=bolna.base_url, bolna_api_key=DEMO_KEY,
            bolna_agent_ids=(), backfill_days=7,
            # The offline analyzer costs nothing: analyze the whole sample in one run.
            llm_batch_limit=(settings.llm_batch_limit if settings.groq_api_keys else len(executions)))
        app = Runtime.build(demo_settings, mongo_client=HookedClient())
        try:
            app.prepare()
            app.db[PIPELINES].insert_one(DEMO_PIPELINE)
            app.db[CONTACTS].insert_many(worked_contacts(utcnow()))
            print(f"Demo: {len(executions)} sample calls of {len(agents)} agents served by a fake Bolna API "
                  f"at {bolna.base_url}; in-memory MongoDB; analyzer: "
                  f"{'Groq ' + settings.groq_model if settings.groq_api_keys else 'offline heuristic'}.\n")
            for name in JOB_NAMES:
                record = app.run_job(name)
                print(f"run {name}: {record['status']}  {json.dumps(record['counts'])}")
                for error in record["errors"]:
                    print(f"   ! {error['message']}")
            print(f"\nBolna requests made: {bolna.request_count()}\n")
            _print_collections(app)
        finally:
            app.close()
    return 0


def _print_collections(app: Runtime) -> None:
    db = app.db
    customers = db[CUSTOMERS].find().sort("lastCallAt", -1)
    print(f"customers ({db[CUSTOMERS].count_documents({})}) — one per phone number (sample data, not real people)")
    print(format_table(
        ["phone", "valid", "name", "status", "status since", "calls", "interest", "last call"],
        [[c["phone"], c.get("phoneValid"), c.get("name"), c.get("status"), c.get("statusAt"), c.get("callCount"),
          c.get("interest"), c.get("lastCallAt")] for c in customers], max_width=28))
    print("(a status only moves up: Booked outranks a later question; `status since` is the call that set it)")
    calls = db[CALLS].find().sort("callAt", -1).limit(15)
    print(f"\ncalls ({db[CALLS].count_documents({})}, newest 15)")
    print(format_table(
        ["call id", "agent", "status", "customer", "secs", "analysis", "tag"],
        [[c["callId"][:8], (c.get("agentId") or "")[:8], c.get("status"), c.get("customerPhone"),
          c.get("durationSeconds"), (c.get("analysis") or {}).get("status", "queued" if c.get("terminal") else "pending"),
          (c.get("analysis") or {}).get("tag")] for c in calls]))
    contacts = db[CONTACTS].find().sort("leadScore", -1)
    print(f"\ncontacts ({db[CONTACTS].count_documents({})}) — the analyzer's view, placed in the "
          f"{DEMO_PIPELINE['name']!r} pipeline")
    print(format_table(
        ["phone", "tag", "score", "lead status", "stage", "by rule", "latest summary"],
        [[c["phone"], c.get("tag"), c.get("leadScore"), c.get("leadStatus"), (c.get("stage") or {}).get("name"),
          (c.get("stage") or {}).get("rule"), ((c.get("pastConversations") or [{}])[-1]).get("summary")]
         for c in contacts], max_width=48))
    print()
    _print_overrides(db)


def _print_overrides(db) -> None:
    """What the routing and a person's locks kept from happening."""
    for entry in db[ACTIVITIES].find({"type": "stage_blocked"}):
        # A contact without a stage can be blocked too (a high score kept out of a low stage).
        where = f"in {entry['from']['name']}" if entry.get("from") else "without a stage"
        print(f"blocked move: {entry['customerPhone']} stays {where}, not "
              f"{entry['to']['name']}: {entry['reason']}")
    for entry in db[ACTIVITIES].find({"type": "held_back"}):
        fields = ", ".join(f"{name} -> {value}" for name, value in entry["fields"].items())
        print(f"held back: {entry['customerPhone']}'s {fields} (locked by a person; call {entry['callId'][:8]}; "
              "kept under `suggested`)")
