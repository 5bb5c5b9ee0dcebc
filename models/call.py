"""The `calls` document: one per Bolna execution, keyed by `callId`."""
from __future__ import annotations

from datetime import datetime

from pymongo import UpdateOne

from models.execution import FUTURE_TOLERANCE, Execution
from utils.clock import EPOCH
from utils.phone import Phone

# What TRANSCRIPT_RETENTION_DAYS removes from an old call: what was said, the recording, and the raw
# extracted data. The analysis, Bolna's summary and the call's figures stay.
TRANSCRIPT_FIELDS = ("transcript", "recordingUrl", "extractedData", "extracted")
TAKE = "_takeBolnaFields"  # a temporary field of the update pipeline, removed by its last stage
# Set only where no call is stored: the analysis state a re-sync never resets.
ON_INSERT = ("processed", "attempts", "createdAt")


def call_fields(execution: Execution) -> dict:
    """Everything Bolna owns on a call; a re-sync overwrites exactly these fields."""
    customer = execution.customer_phone
    return {
        "callId": execution.id,
        "agentId": execution.agent_id,
        "batchId": execution.batch_id,
        "status": execution.status,
        "terminal": execution.terminal,
        "connected": execution.connected,
        "direction": execution.direction,
        "fromNumberRaw": execution.from_number,
        "fromNumber": _key(execution.from_phone),
        "toNumberRaw": execution.to_number,
        "toNumber": _key(execution.to_phone),
        "customerPhone": customer.key if customer else None,
        "customerPhoneValid": customer.valid if customer else False,
        "customerPhoneMissing": execution.customer_phone_missing,
        "durationSeconds": execution.duration,
        "costCents": execution.cost_cents,
        "callAt": execution.created_at,
        "bolnaUpdatedAt": execution.updated_at,
        "transcript": execution.transcript,
        "bolnaSummary": execution.summary,
        "extractedData": execution.extracted_raw,
        "extracted": execution.extracted,
        "extractedConfidence": (execution.extraction.confidence or None) if execution.extraction else None,
        "recordingUrl": execution.recording_url,
        "hangupReason": execution.hangup_reason,
        "hangupBy": execution.hangup_by,
        "answeredByVoiceMail": execution.answered_by_voice_mail,
    }


def call_upsert(execution: Execution, now: datetime, *, with_transcript: bool = True) -> UpdateOne:
    """Insert a new call unprocessed; on re-sync refresh Bolna's fields only, so the analysis
    state (`processed`, `analysis`, claims) survives. `with_transcript=False` for a call past its
    transcript retention: a re-sync must not bring back what retention removed.

    Order-safe: the poll and webhooks deliver one call's states in any order, so an aggregation
    pipeline takes Bolna's fields only when they are not older than the stored ones (`_take`):
    a stale `updated_at`, or an unfinished status after a final one, changes nothing at all.
    (Not a filter that leaves out a call further along, with plain `$set`: a filter with a clause
    beyond the `callId` index makes the test run's wire server scan the collection.)"""
    stage = {name: ({"$ifNull": [f"${name}", {"$literal": value}]} if name in ON_INSERT
                    else {"$cond": [f"${TAKE}", {"$literal": value}, f"${name}"]})
             for name, value in new_call(execution, now, with_transcript=with_transcript).items()}
    return UpdateOne({"callId": execution.id},
                     [{"$set": {TAKE: _newer_or_same(execution, now)}}, {"$set": stage}, {"$unset": TAKE}],
                     upsert=True)


def new_call(execution: Execution, now: datetime, *, with_transcript: bool = True) -> dict:
    """The document `call_upsert` makes where no call is stored, built here: a call is written by a
    plain insert, which the server stores without evaluating a pipeline, and one stored already
    makes the insert hit the unique `callId`; the upsert is then run in its place
    (`bulk_upsert(retry_as=...)`). `tests/test_plain_inserts.py` checks both make the same one."""
    fields = call_fields(execution)
    if not with_transcript:
        fields = {name: value for name, value in fields.items() if name not in TRANSCRIPT_FIELDS}
    return {**fields, "updatedAt": now, "processed": False, "attempts": 0, "createdAt": now}


def _newer_or_same(execution: Execution, now: datetime) -> dict | bool:
    """True on the server unless the stored call is further along than `execution`: final while
    it is not, or updated at Bolna after it. Equal times take it, so a re-sync stays a write.
    A stored time further ahead of `now` than Bolna's clock can be (stored before such times were
    refused) outranks nothing: it would freeze the call for ever."""
    stored_final = {"$eq": ["$terminal", True]}
    stored_time = {"$ifNull": ["$bolnaUpdatedAt", EPOCH]}
    stored_newer = ({"$and": [{"$gt": [stored_time, execution.updated_at]},
                              {"$lte": [stored_time, now + FUTURE_TOLERANCE]}]}
                    if execution.updated_at is not None else False)
    if execution.terminal:
        behind = {"$and": [stored_final, stored_newer]} if stored_newer is not False else False
    else:
        behind = {"$or": [stored_final, stored_newer]}
    return True if behind is False else {"$not": [behind]}


def _key(phone: Phone | None) -> str | None:
    return phone.key if phone else None
