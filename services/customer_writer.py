"""The CRM sync's writer: Bolna executions -> `customers`, one record per phone number.

Each page: one lookup of the page's numbers under every spelling, a link per call in
`customer_calls` (what counts a customer's calls, exactly, without an array that grows with
every call), one count of the links per number, the status changes as activities, one batch of
customer upserts, and the links marked applied — last, so a page cut off by a crash is taken
again and every step is idempotent."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from pymongo import UpdateOne
from pymongo.database import Database

from models.customer import CustomerCall, StatusRanks, customer_call, customer_upsert, held_back, status_change
from models.locks import HELD_BACK
from models.execution import Execution, execution_id
from services.bulk import bulk_upsert
from services.customer_merge import legacy_links, linked_call_id, merge_records
from services.database import ACTIVITIES, CUSTOMER_CALLS, CUSTOMERS
from services.phone_lookup import records_by_phone
from services.privacy.guard import PrivacyGuard
from services.run_records import RunRecorder
from utils.clock import utcnow
from utils.phone import Phone, mask_phone

STATUS_CHANGE = "status_change"


class CustomerWriter:
    def __init__(self, db: Database, ranks: StatusRanks, guard: PrivacyGuard):
        self.guard = guard
        self.customers = db[CUSTOMERS]
        self.links = db[CUSTOMER_CALLS]
        self.activities = db[ACTIVITIES]
        self.ranks = ranks

    def unchanged(self, items: list[dict]) -> set[str]:
        """Calls already applied to their customer: a terminal call's customer data is final."""
        ids = [call_id for item in items if (call_id := execution_id(item))]
        if not ids:
            return set()
        # By id alone, `applied` checked here: a planner then has nothing to do but the _id index.
        links = self.links.find({"_id": {"$in": [self.links.local_id(i) for i in ids]}}, {"applied": 1, "callId": 1})
        return {linked_call_id(link) for link in links if link.get("applied")}

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> None:
        executions = self.guard.admit(executions, recorder, agent_id)
        by_phone = self._by_phone(executions, recorder, agent_id)
        if not by_phone:
            return
        now = utcnow()
        found = records_by_phone(self.customers, [phone for phone, _ in by_phone.values()])
        # Links first, legacy ones too: a merge below removes the `callIds` they come from.
        bulk_upsert(self.links, [link for key, docs in found.items() for link in legacy_links(key, docs, self.links.local_id)]
                    + [_link(key, call, self.links.local_id) for key, (_phone, calls) in by_phone.items() for call in calls])
        stored = {key: merge_records(self.customers, docs, self.ranks) for key, docs in found.items()}
        counts = self._counts(list(by_phone))
        # Before the customers: once they hold the new status, a re-run could not tell it changed.
        self._record_changes(by_phone, stored, now)
        inserted, updated = bulk_upsert(self.customers, [
            customer_upsert(phone, calls, now, ranks=self.ranks, call_count=counts.get(key, 0),
                            existing_id=stored[key]["_id"] if key in stored else None)
            for key, (phone, calls) in by_phone.items()])
        call_ids = [call.call_id for _phone, calls in by_phone.values() for call in calls]
        self.links.update_many({"_id": {"$in": [self.links.local_id(i) for i in call_ids]}}, {"$set": {"applied": True}})
        self.guard.recheck(executions)
        recorder.add("inserted", inserted, agent_id)
        recorder.add("updated", updated, agent_id)

    def _by_phone(self, executions: list[Execution], recorder: RunRecorder,
                  agent_id: str) -> dict[str, tuple[Phone, list[CustomerCall]]]:
        by_phone: dict[str, tuple[Phone, list[CustomerCall]]] = {}
        for execution in executions:
            if not execution.terminal:
                continue  # its outcome and extracted data are not final yet; a later run takes it
            phone = execution.customer_phone
            if phone is None:
                # Not an error: a withheld caller id is how some calls come. The call keeps the reason.
                recorder.add(f"{execution.customer_phone_missing}Number", 1, agent_id)
                continue
            if not phone.valid:
                recorder.error(f"call {execution.id}: phone {mask_phone(phone.raw)} is not a valid number; "
                               "stored as given with phoneValid false",
                               code="invalid_phone", call_id=execution.id, agent_id=agent_id)
            if execution.extracted_error:
                recorder.error(f"call {execution.id}: {execution.extracted_error}; customer written "
                               "without extracted fields", code="bad_extracted_data",
                               call_id=execution.id, agent_id=agent_id)
            by_phone.setdefault(phone.key, (phone, []))[1].append(customer_call(execution))
        return by_phone

    def _counts(self, keys: list[str]) -> dict[str, int]:
        return {group["_id"]: group["count"] for group in self.links.aggregate([
            {"$match": {"phone": {"$in": keys}}}, {"$group": {"_id": "$phone", "count": {"$sum": 1}}}])}

    def _record_changes(self, by_phone: dict[str, tuple[Phone, list[CustomerCall]]],
                        stored: dict[str, dict], now: datetime) -> None:
        """One activity per status change, keyed by the call that made it (a re-run rewrites it),
        and one per page's calls of a number whose locked fields they would have changed."""
        operations = []
        for key, (_phone, calls) in by_phone.items():
            customer = {"customerPhone": key, "customerId": stored.get(key, {}).get("_id")}
            change = status_change(stored.get(key), calls, self.ranks)
            if change is not None:
                operations.append(UpdateOne(
                    {"callId": change.pop("callId"), "type": STATUS_CHANGE, "round": 0},
                    {"$setOnInsert": {**customer, **change, "at": now}}, upsert=True))
            held = held_back(stored.get(key), calls, self.ranks)
            if held:
                newest = max(calls, key=lambda call: (call.at, call.call_id))
                operations.append(UpdateOne(
                    {"callId": newest.call_id, "type": HELD_BACK, "round": 0},
                    {"$set": {**customer, "fields": held, "reason": "locked by a person", "at": now}}, upsert=True))
        bulk_upsert(self.activities, operations)


def _link(key: str, call: CustomerCall, link_id: Callable[[str], str]) -> UpdateOne:
    """The call counted on the number `key`; `applied` once the customer holds it."""
    return UpdateOne({"_id": link_id(call.call_id)},
                     {"$set": {"phone": key, "at": call.at}, "$setOnInsert": {"callId": call.call_id, "applied": False}},
                     upsert=True)
