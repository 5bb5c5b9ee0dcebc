"""The naive sync the benchmarks compare against: every run re-reads the whole backfill period, and
each record costs a find and a write per collection. Same client, same mapping as callsync, so
the difference measured is only the I/O pattern."""
from __future__ import annotations

from datetime import datetime

from models.call import call_fields
from models.customer import customer_call
from models.execution import MalformedExecution, parse_execution
from services.bolna_client import BolnaClient
from utils.phone import normalize_phone


def naive_sync(db, client: BolnaClient, agent_ids: list[str], start: datetime, end: datetime,
               region: str) -> int:
    """Both collections, record by record; returns the executions read."""
    read = 0
    for agent_id in agent_ids:
        for page in client.iter_pages(agent_id, start, end):
            for item in page:
                read += 1
                try:
                    execution = parse_execution(item, region)
                except MalformedExecution:
                    continue
                _store_call(db, execution, region)
                if execution.terminal:
                    _store_customer(db, execution, region)
    return read


def _store_call(db, execution, region: str) -> None:
    fields = call_fields(execution)
    if db["calls"].find_one({"callId": execution.id}, {"_id": 1}) is None:
        db["calls"].insert_one({**fields, "processed": False})
    else:
        db["calls"].update_one({"callId": execution.id}, {"$set": fields})


def _store_customer(db, execution, region: str) -> None:
    phone = normalize_phone(execution.customer_number, region)
    if phone is None:
        return
    call = customer_call(execution)
    if db["customers"].find_one({"phone": phone.key}, {"_id": 1}) is None:
        db["customers"].insert_one({"phone": phone.key, "callIds": [call.call_id], "status": call.status,
                                 **call.profile})
    else:
        db["customers"].update_one({"phone": phone.key},
                                {"$addToSet": {"callIds": call.call_id}, "$set": {"status": call.status}})


def sequential_llm(base_url: str, transcripts: list[str], model: str) -> int:
    """One chat completion after another, as a loop over the batch would do; returns requests."""
    import groq

    client = groq.Groq(api_key="bench-key", base_url=base_url, max_retries=0)
    for transcript in transcripts:
        client.chat.completions.create(model=model, temperature=0, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": transcript}])
    return len(transcripts)
