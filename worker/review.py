"""`main.py review`: the stage moves the analysis was not sure enough to make, waiting for a
person to accept or dismiss them in the CRM front end (`stage_reviews`, status `open`)."""
from __future__ import annotations

import json
from datetime import datetime

from pymongo.database import Database

from services.database import STAGE_REVIEWS
from utils.phone import mask_phone
from utils.table import format_table

REVIEW_COLUMNS = ("createdAt", "contactId", "customerPhone", "callId", "pipelineId", "currentStage", "suggestedStage",
                  "leadScore", "confidence", "reasoning")


def open_reviews(db: Database, limit: int) -> list[dict]:
    """Oldest first: the `status_createdAt` index."""
    cursor = db[STAGE_REVIEWS].find({"status": "open"}, {name: 1 for name in REVIEW_COLUMNS},
                                    sort=[("createdAt", 1)], limit=limit)
    return [{**review, "customerPhone": mask_phone(review.get("customerPhone") or "")} for review in cursor]


def show_reviews(db: Database, *, as_json: bool, limit: int) -> int:
    reviews = open_reviews(db, limit)
    if as_json:
        print(json.dumps(reviews, default=_json_value))
        return 0
    if not reviews:
        print("no open stage reviews")
        return 0
    print(f"{len(reviews)} open stage review(s), oldest first (accept or dismiss them in the CRM)")
    print(format_table(
        ["created", "contact", "phone", "call", "from", "suggested", "score", "confidence", "reasoning"],
        [[r.get("createdAt"), str(r.get("contactId")), r["customerPhone"], r.get("callId"),
          (r.get("currentStage") or {}).get("name"), (r.get("suggestedStage") or {}).get("name"),
          r.get("leadScore"), r.get("confidence"), r.get("reasoning")] for r in reviews], max_width=40))
    return 0


def _json_value(value: object) -> str:
    if isinstance(value, datetime):  # stored times are naive UTC
        return value.isoformat(timespec="milliseconds") + "Z"
    return str(value)  # ObjectId
