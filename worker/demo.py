"""`main.py demo`: the real jobs, over real HTTP, against a bundled data set served by a local
fake Bolna API, writing to an in-memory MongoDB. Needs no keys and no server. With `--accounts N`,
the many-accounts mode as `run` with ACCOUNT_SOURCE=mongodb runs it, against one fake Bolna serving
N organisations: neighbouring accounts share a customer number and a call id on purpose, and each
keeps its own records of them."""
from __future__ import annotations

import json
import logging
from contextlib import closing
from datetime import timedelta

from fakes.accounts_dataset import accounts_dataset, customer_number
from fakes.bolna_server import FakeBolna
from fakes.demo_crm import DEMO_PIPELINE, worked_contacts
from fakes.demo_dataset import demo_dataset
from fakes.mongo_hooks import HookedClient
from services.database import ACTIVITIES, CALLS, CONTACTS, CUSTOMERS, PIPELINES
from utils.clock import utcnow
from utils.config import Settings
from utils.table import format_table
from worker.app import JOB_NAMES, Runtime
from worker.status import collect, format_fleet

DEMO_KEY = "demo-key"


def run_demo(settings: Settings, accounts: int | None = None) -> int:
    if settings.log_level != "DEBUG":
        # The demo prints each run's errors itself; log lines would only repeat them.
        logging.getLogger().setLevel(logging.ERROR)
    if accounts:
        return _accounts_demo(settings, accounts)
    agents, executions = demo_dataset()
    with FakeBolna(agents, executions, api_key=DEMO_KEY, projection="trimmed") as bolna:
        demo_settings = settings.with_overrides(
            mongodb_db="callsync_demo", bolna_base_url=bolna.base_url, bolna_api_key=DEMO_KEY,
            bolna_agent_ids=(), backfill_days=7,
            # The offline analyzer costs nothing: analyze the whole sample in one run.
            llm_calls_per_run=(settings.llm_calls_per_run if settings.groq_api_keys else len(executions)))
        with closing(Runtime.build(demo_settings, mongo_client=HookedClient())) as app:
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
            _print_collections(app.db)
    return 0


def _print_collections(db) -> None:
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
    # What the routing and a person's locks kept from happening.
    for entry in db[ACTIVITIES].find({"type": "stage_blocked"}):
        # Only a contact in a stage is blocked: a first placement is no downgrade.
        print(f"blocked move: {entry['customerPhone']} stays in {entry['from']['name']}, not "
              f"{entry['to']['name']}: {entry['reason']}")
    for entry in db[ACTIVITIES].find({"type": "held_back"}):
        fields = ", ".join(f"{name} -> {value}" for name, value in entry["fields"].items())
        print(f"held back: {entry['customerPhone']}'s {fields} (locked by a person; call {entry['callId'][:8]}; "
              "kept under `suggested`)")


def _accounts_demo(settings: Settings, how_many: int) -> int:
    accounts = accounts_dataset(how_many, agents_per_account=2, calls_per_agent=6, seed=2026, span_days=3.0,
                                transcript_chars=400, shared_ratio=0.2)
    with FakeBolna.serving(accounts, projection="trimmed") as bolna:
        demo_settings = settings.with_overrides(
            mongodb_db="callsync_demo", account_source="mongodb", bolna_api_key=None, bolna_base_url=bolna.base_url,
            backfill_days=7, llm_calls_per_run=settings.llm_calls_per_run if settings.groq_api_keys else 100)
        client = HookedClient()
        users = client[demo_settings.mongodb_db][demo_settings.accounts_collection]
        users.insert_many([{"_id": account.label, "name": f"Demo organisation {n + 1}",
                            "bolnaApiKey": account.api_key, "subscription": {"status": "active"}}
                           for n, account in enumerate(accounts)])
        runs: list[dict] = []
        with closing(Runtime.build(demo_settings, mongo_client=client)) as fleet:
            fleet.subscribe(runs.append)
            fleet.prepare()
            print(f"Demo: {how_many} accounts of 2 agents each in `users`, served by one fake Bolna API at "
                  f"{bolna.base_url}, each under its own key; in-memory MongoDB.\n")
            fleet.work(ahead=timedelta(minutes=demo_settings.sync_interval_minutes))
            for run in sorted(runs, key=lambda run: (str(run["userId"]), JOB_NAMES.index(run["job"]))):
                print(f"{run['userId']} run {run['job']}: {run['status']}  {json.dumps(run['counts'])}")
            _print_accounts(fleet.db, accounts)
            print("\n" + format_fleet(collect(fleet, limit=how_many)))
    return 0


def _print_accounts(db, accounts) -> None:
    rows = [[account.label, db[CUSTOMERS].count_documents({"userId": account.label}),
             db[CALLS].count_documents({"userId": account.label}),
             db[CONTACTS].count_documents({"userId": account.label})] for account in accounts]
    print("\n" + format_table(["account (userId)", "customers", "calls", "contacts"], rows))
    if len(accounts) > 1:
        first, second = accounts[0], accounts[1]
        shared_ids = {e["id"] for e in first.executions} & {e["id"] for e in second.executions}
        shared_numbers = {customer_number(e) for e in first.executions} & {customer_number(e) for e in second.executions}
        for call_id in sorted(shared_ids)[:1]:
            stored = list(db[CALLS].find({"callId": call_id}, {"userId": 1, "customerPhone": 1}))
            print(f"\ncall id {call_id[:8]}… is in both {first.label} and {second.label}: stored "
                  f"{len(stored)} times, once per account ({', '.join(str(s['userId']) for s in stored)})")
        print(f"customer numbers both accounts called: {len(shared_numbers)}; each account has its own "
              "customer record of each (unique per {userId, phone})")
