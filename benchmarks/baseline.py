"""The naive sync the benchmarks compare against, as a competent person would write it without
batching: one pass over each agent's listing from a cursor (the whole backfill on a first run),
the full record of a trimmed call fetched when needed (one request after another), and one
`update_one(upsert=True)` per record and collection. Same client and mapping as callsync, so the
difference measured is the I/O pattern."""
from __future__ import annotations

from datetime import datetime

from models.call import call_fields
from models.customer import customer_call
from models.execution import MalformedExecution, needs_full_record, parse_execution
from services.bolna_client import BolnaClient, BolnaError

# The account the records belong to, named in every filter as any writer of this schema must:
# every index leads with `userId` (docs/collections.md), and a filter without it would scan.
# `None` is the single account of ACCOUNT_SOURCE=env.
ACCOUNT = None


def naive_sync(db, client: BolnaClient, agent_ids: list[str], start: datetime, end: datetime,
               region: str) -> int:
    """Both collections, record by record, for calls created since `start` (the cursor);
    returns the executions read."""
    read = 0
    for agent_id in agent_ids:
        for page in client.iter_pages(agent_id, start, end):
            for item in page:
                read += 1
                try:
                    execution = parse_execution(item, region)
                    if isinstance(item, dict) and needs_full_record(item):
                        execution = parse_execution(client.get_execution(execution.id), region)
                except (MalformedExecution, BolnaError):
                    continue
                _store_call(db, execution)
                if execution.terminal:
                    _store_customer(db, execution)
    return read


def _store_call(db, execution) -> None:
    db["calls"].update_one({"userId": ACCOUNT, "callId": execution.id},
                           {"$set": call_fields(execution), "$setOnInsert": {"processed": False}}, upsert=True)


def _store_customer(db, execution) -> None:
    phone = execution.customer_phone
    if phone is None:
        return
    call = customer_call(execution)
    db["customers"].update_one({"userId": ACCOUNT, "phone": phone.key},
                               {"$addToSet": {"callIds": call.call_id},
                                "$set": {"status": call.status, **call.profile}}, upsert=True)


def sequential_llm(base_url: str, transcripts: list[str], model: str) -> int:
    """One chat completion after another, as a loop over the batch would do; returns requests."""
    import groq

    client = groq.Groq(api_key="bench-key", base_url=base_url, max_retries=0)
    for transcript in transcripts:
        client.chat.completions.create(model=model, temperature=0, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": transcript}])
    return len(transcripts)
