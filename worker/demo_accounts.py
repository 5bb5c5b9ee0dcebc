"""`main.py demo --tenants N`: the many-accounts mode, as `run` with TENANT_SOURCE=mongodb runs it,
against one fake Bolna serving N organisations and an in-memory MongoDB. Neighbouring accounts
share a customer number and a call id on purpose: each keeps its own records of them."""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from fakes.accounts_dataset import accounts_dataset, customer_number
from fakes.bolna_server import FakeBolna
from fakes.mongo_hooks import HookedClient
from services.database import CALLS, CONTACTS, CUSTOMERS
from utils.config import Settings
from utils.table import format_table
from worker.app import JOB_NAMES, Runtime
from worker.status import collect, format_fleet


def run_accounts_demo(settings: Settings, tenants: int) -> int:
    if settings.log_level != "DEBUG":
        logging.getLogger().setLevel(logging.ERROR)  # the demo prints what each run did itself
    accounts = accounts_dataset(tenants, agents_per_account=2, calls_per_agent=6, seed=2026, span_days=3.0,
                                transcript_chars=400, shared_ratio=0.2)
    with FakeBolna.serving(accounts, projection="trimmed") as bolna:
        demo_settings = settings.with_overrides(
            mongodb_db="callsync_demo", tenant_source="mongodb", bolna_api_key=None, bolna_base_url=bolna.base_url,
            backfill_days=7, llm_batch_limit=settings.llm_batch_limit if settings.groq_api_keys else 100)
        client = HookedClient()
        users = client[demo_settings.mongodb_db][demo_settings.tenants_collection]
        users.insert_many([{"_id": account.label, "name": f"Demo organisation {n + 1}",
                            "bolnaApiKey": account.api_key, "subscription": {"status": "active"}}
                           for n, account in enumerate(accounts)])
        fleet = Runtime.build(demo_settings, mongo_client=client)
        runs: list[dict] = []
        fleet.subscribe(runs.append)
        try:
            fleet.prepare()
            print(f"Demo: {tenants} accounts of 2 agents each in `users`, served by one fake Bolna API at "
                  f"{bolna.base_url}, each under its own key; in-memory MongoDB.\n")
            fleet.work(ahead=timedelta(minutes=demo_settings.sync_interval_minutes))
            for run in sorted(runs, key=lambda run: (str(run["userId"]), JOB_NAMES.index(run["job"]))):
                print(f"{run['userId']} run {run['job']}: {run['status']}  {json.dumps(run['counts'])}")
            _print_accounts(fleet, accounts)
            print("\n" + format_fleet(collect(fleet, limit=tenants)))
        finally:
            fleet.close()
    return 0


def _print_accounts(fleet: Runtime, accounts) -> None:
    db = fleet.db
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
