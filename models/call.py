"""The `calls` document: one per Bolna execution, keyed by `callId`."""
from __future__ import annotations

from datetime import datetime

from pymongo import UpdateOne

from models.execution import FUTURE_TOLERANCE, Execution
from utils.phone import Phone

# What TRANSCRIPT_RETENTION_DAYS removes from an old call: what was said, the recording, and the raw
# extracted data. The analysis, Bolna's summary and the call's figures stay.
TRANSCRIPT_FIELDS = ("transcript", "recordingUrl", "extractedData", "extracted")


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


def call_upsert(execution: Execution, now: datetime, *, with_transcript: bool = True, hint=None) -> UpdateOne:
    """Insert a new call unprocessed; on re-sync refresh Bolna's fields only, so the analysis
    state (`processed`, `analysis`, claims) survives. `with_transcript=False` for a call past its
    transcript retention: a re-sync must not bring back what retention removed.

    Order-safe: the poll and webhooks deliver one call's states in any order, so the filter
    matches the stored call only when it is not further along than `execution`. A call further
    along is not matched, and the upsert's insert then hits the unique `callId`: a duplicate key
    on the retry is a call ahead of this state, nothing written (`bulk_upsert(conditional=True)`).
    Plain `$set`/`$setOnInsert`, not a pipeline: the server applies them without evaluating an
    expression per field. `hint`: the `callId` index, which a simpler planner (the test run's wire
    server) does not pick for a filter with a clause outside it."""
    fields = call_fields(execution)
    if not with_transcript:
        fields = {name: value for name, value in fields.items() if name not in TRANSCRIPT_FIELDS}
    ahead = _ahead(execution, now)
    return UpdateOne(
        {"callId": execution.id, **({"$nor": [ahead]} if ahead else {})},
        {"$set": {**fields, "updatedAt": now},
         "$setOnInsert": {"processed": False, "attempts": 0, "createdAt": now}},
        upsert=True, hint=hint,
    )


def _ahead(execution: Execution, now: datetime) -> dict | None:
    """The stored calls further along than `execution` (None: none can be): final while it is
    not, or updated at Bolna after it. Equal times are not ahead, so a re-sync stays a write.
    A stored time further ahead of `now` than Bolna's clock can be (stored before such times were
    refused) outranks nothing: it would freeze the call for ever."""
    newer = ({"bolnaUpdatedAt": {"$gt": execution.updated_at, "$lte": now + FUTURE_TOLERANCE}}
             if execution.updated_at is not None else None)
    if execution.terminal:
        return {"terminal": True, **newer} if newer else None
    return {"$or": [{"terminal": True}, newer]} if newer else {"terminal": True}


def _key(phone: Phone | None) -> str | None:
    return phone.key if phone else None
