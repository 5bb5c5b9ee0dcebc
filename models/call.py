"""The `calls` document: one per Bolna execution, keyed by `callId`."""
from __future__ import annotations

from datetime import datetime

from pymongo import UpdateOne

from models.execution import Execution
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


def call_upsert(execution: Execution, now: datetime, *, with_transcript: bool = True) -> UpdateOne:
    """Insert a new call unprocessed; on re-sync refresh Bolna's fields only, so the
    analysis state (`processed`, `analysis`, claims) survives. `with_transcript=False` for a call
    past its transcript retention: a re-sync must not bring back what retention removed."""
    fields = call_fields(execution)
    if not with_transcript:
        fields = {name: value for name, value in fields.items() if name not in TRANSCRIPT_FIELDS}
    return UpdateOne(
        {"callId": execution.id},
        {
            "$set": {**fields, "updatedAt": now},
            "$setOnInsert": {"processed": False, "attempts": 0, "createdAt": now},
        },
        upsert=True,
    )


def _key(phone: Phone | None) -> str | None:
    return phone.key if phone else None
