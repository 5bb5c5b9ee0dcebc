"""`main.py forget --phone <number>`: erase one person's number everywhere and keep it out of
later syncs (services/privacy.py). The number is never printed: only its last four digits."""
from __future__ import annotations

from pymongo.database import Database

from services.privacy import COLLECTIONS, Eraser, forget, hasher_for
from utils.config import Settings
from utils.phone import Phone, mask_phone, normalize_phone
from utils.table import format_table

_MEANING = {
    "customers": "deleted", "customerCalls": "deleted (links counting the calls)",
    "calls": "kept without number, transcript, recording, extracted data or analysis text",
    "contacts": "deleted", "activities": "deleted (status changes, AI decisions, stage moves)",
    "stageReviews": "deleted (stage suggestions waiting for a person)",
    "followUps": "no longer fetched by id",
    "webhookInbox": "deleted (webhook deliveries waiting to be processed)",
}


class BadNumber(ValueError):
    """The number given cannot be one the daemon stored; the message says why, masked."""


def parse_number(text: str, region: str, *, as_stored: bool = False) -> Phone:
    """Any spelling of a valid number; `as_stored`: the exact text of an invalid one, which the
    daemon keeps as received (`phoneValid: false`)."""
    if as_stored:
        if not text.strip():
            raise BadNumber("--phone is empty")
        return Phone(raw=text, e164=None)
    phone = normalize_phone(text, region)
    if phone is None:
        raise BadNumber("--phone has no digits: give the person's number, in any spelling "
                        "(international with +, or national as dialled)")
    if not phone.valid:
        raise BadNumber(f"--phone {mask_phone(text)} is not a valid number in DEFAULT_PHONE_REGION={region}: "
                        "write it with its country code (+...), or, to erase records stored under exactly "
                        "this text (numbers the daemon could not read are kept as received), add --as-stored")
    return phone


def run_forget(settings: Settings, db: Database, phone: Phone, *, dry_run: bool) -> str:
    """Erase (or, `dry_run`, count) and return the report to print."""
    shown = mask_phone(phone.key)
    if dry_run:
        counts = Eraser(db, settings.default_phone_region).find(phone).counts()
        header = f"{shown}: dry run, nothing changed. An erasure would affect:"
    else:
        counts = forget(db, phone, hasher_for(settings.privacy_hash_key, required=True), settings.default_phone_region)
        header = (f"{shown}: erased, and on the suppression list: later syncs skip this number."
                  + ("" if any(counts.values()) else " Nothing was left to remove."))
    rows = [[name, counts[name], _MEANING[name]] for name in COLLECTIONS]
    return header + "\n" + format_table(["collection", "documents", "what happens"], rows, max_width=80)
