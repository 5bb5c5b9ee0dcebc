"""What the CRM front end has written before the demo's first run: a sales pipeline, and two
contacts a person already worked on (so the demo shows a locked field and a blocked downgrade)."""
from __future__ import annotations

from datetime import datetime

DEMO_PIPELINE = {
    "_id": "demo-sales", "name": "Sales", "updateMode": "UPDATE_EXISTING",  # every agent: no agentIds
    "stages": [
        {"id": "new", "name": "New Lead", "type": "LEAD", "description": "not yet engaged"},
        {"id": "qualified", "name": "Qualified", "type": "IN_PROGRESS", "scoreRange": {"min": 31, "max": 60},
         "description": "a real need, asking questions"},
        {"id": "negotiation", "name": "Negotiation", "type": "IN_PROGRESS", "scoreRange": {"min": 61, "max": 79},
         "description": "price, dates or terms under discussion"},
        {"id": "won", "name": "Won", "type": "WON", "description": "booked or bought"},
        {"id": "lost", "name": "Lost", "type": "LOST", "description": "declined or unreachable for good"},
    ],
}


def worked_contacts(now: datetime) -> list[dict]:
    """Ravi Sharma, marked Purchased by a salesperson who locked the tag; and a hot lead in
    Negotiation whose next call goes unanswered (the analysis would send him back to New Lead)."""
    return [
        {"phone": "+919876543210", "tag": "Purchased", "locked": ["tag"], "createdAt": now, "updatedAt": now},
        {"phone": "+919740055667", "leadScore": 85, "tag": "Interested", "createdAt": now, "updatedAt": now,
         "stage": {"id": "negotiation", "name": "Negotiation", "type": "IN_PROGRESS", "pipelineId": "demo-sales"}},
    ]
