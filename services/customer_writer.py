"""The CRM sync's writer: Bolna executions -> `customers`, one record per phone number.

Each page: one lookup of the page's numbers under every spelling, a link per call in
`customer_calls` (what counts a customer's calls, exactly, without an array that grows with
every call), one count of the links per number, one batch of customer upserts, the status
changes they made as activities, and the links marked applied — last, so a page cut off by a
crash is taken again and every step is idempotent."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from pymongo import UpdateOne
from pymongo.database import Database

from models.customer import (PENDING_STATUS_CHANGES, CustomerCall, StatusRanks, change_reason, customer_call,
                             customer_insert, customer_upsert, held_back, status_change)
from models.locks import HELD_BACK
from models.execution import Execution, execution_id
from services.bulk import bulk_upsert
from services.customer_merge import LEGACY_LINK, LEGACY_LINK_EXPRESSION, legacy_links, linked_call_id, merge_records
from services.database import ACTIVITIES, CUSTOMER_CALLS, CUSTOMERS, PHONE_INDEX_KEYS
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
        # Links first, legacy ones too: a merge below removes the `callIds` they come from. None is
        # applied until the customer is written under its number's key: until then a restart takes
        # the page again, and merges and rewrites the record.
        bulk_upsert(self.links, [link for key, docs in found.items() for link in legacy_links(key, docs, self.links.local_id)]
                    + [_link(key, call, self.links.local_id) for key, (_phone, calls) in by_phone.items() for call in calls])
        stored = {key: merge_records(self.customers, key, docs, self.ranks) for key, docs in found.items()}
        counts, legacy_keys = self._counts(list(by_phone))
        # Before the customers: once they hold the new values, a re-run could not tell a lock held one.
        self._record_held_back(by_phone, stored, now)
        upserts = [customer_upsert(phone, calls, now, ranks=self.ranks, call_count=counts.get(key, 0),
                                   existing_id=stored[key]["_id"] if key in stored else None)
                   for key, (phone, calls) in by_phone.items()]
        inserted, updated = bulk_upsert(self.customers, [
            upsert if key in stored else customer_insert(phone, calls, now, ranks=self.ranks,
                                                         call_count=counts.get(key, 0))
            for upsert, (key, (phone, calls)) in zip(upserts, by_phone.items())], retry_as=upserts)
        # Before the links are marked applied: a page cut off before this is taken again, and
        # logs what this write (or any earlier one) left pending.
        self._log_status_changes([key for key, (_phone, calls) in by_phone.items()
                                  if self._may_change_status(stored.get(key), calls)], now)
        call_ids = [call.call_id for _phone, calls in by_phone.values() for call in calls]
        if legacy_keys:
            self.links.update_many({"phone": {"$in": legacy_keys}, **LEGACY_LINK}, {"$set": {"applied": True}})
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

    def _counts(self, keys: list[str]) -> tuple[dict[str, int], list[str]]:
        """The calls counted on each number, and the numbers with legacy links still to apply
        (`LEGACY_LINK`): known from the links themselves, so a run after a crash anywhere in a
        merge applies them too, and the steady state pays no write for them."""
        groups = list(self.links.aggregate([
            {"$match": {"phone": {"$in": keys}}},
            {"$group": {"_id": "$phone", "count": {"$sum": 1}, "legacy": {"$sum": {"$cond": [LEGACY_LINK_EXPRESSION, 1, 0]}}}}]))
        return {group["_id"]: group["count"] for group in groups}, [group["_id"] for group in groups if group["legacy"]]

    def _record_held_back(self, by_phone: dict[str, tuple[Phone, list[CustomerCall]]],
                          stored: dict[str, dict], now: datetime) -> None:
        """One activity per page's calls of a number whose locked fields they would have changed."""
        operations = []
        for key, (_phone, calls) in by_phone.items():
            held = held_back(stored.get(key), calls, self.ranks)
            if held:
                newest = max(calls, key=lambda call: (call.at, call.call_id))
                operations.append(UpdateOne(
                    {"callId": newest.call_id, "type": HELD_BACK, "round": 0},
                    {"$set": {"customerPhone": key, "customerId": stored.get(key, {}).get("_id"), "fields": held,
                              "reason": "locked by a person", "at": now}}, upsert=True))
        bulk_upsert(self.activities, operations)

    def _may_change_status(self, stored: dict | None, calls: list[CustomerCall]) -> bool:
        """Whether the upsert of `calls` may have made (or an earlier write left) a change to log:
        the one read of the changes is skipped for the numbers whose status these calls cannot
        move (the steady state). A status only moves up, so what cannot beat the record as read
        cannot beat it at the write; a change a person's edit made possible meanwhile stays
        pending on the record until its number's next write logs it."""
        return (stored is None or bool(stored.get(PENDING_STATUS_CHANGES))
                or status_change(stored, calls, self.ranks, ignore_lock=True) is not None)

    def _log_status_changes(self, keys: list[str], now: datetime) -> None:
        """One activity per status change the upserts made, as each recorded it on its customer
        (`PENDING_STATUS_CHANGES`, from the status it replaced): keyed by the call that made it,
        so a change logged twice (two writers, a retry) is one activity; then taken off the
        customer. A change that did not happen was never recorded."""
        if not keys:
            return
        pending = list(self.customers.find({"phone": {"$in": keys}, f"{PENDING_STATUS_CHANGES}.0": {"$exists": True}},
                                           {"phone": 1, PENDING_STATUS_CHANGES: 1},
                                           # Named: a planner may weigh the array clause and scan.
                                           hint=PHONE_INDEX_KEYS))
        if not pending:
            return
        bulk_upsert(self.activities, [
            UpdateOne({"callId": change["callId"], "type": STATUS_CHANGE, "round": 0},
                      {"$setOnInsert": {"customerPhone": customer["phone"], "customerId": customer["_id"],
                                        "from": change["from"], "to": change["to"], "callAt": change["callAt"],
                                        "reason": change_reason(change["from"], change["to"], self.ranks), "at": now}},
                      upsert=True)
            for customer in pending for change in customer[PENDING_STATUS_CHANGES]])
        self.customers.bulk_write([
            UpdateOne({"_id": customer["_id"]}, {"$pull": {PENDING_STATUS_CHANGES: {"callId": {"$in": [
                change["callId"] for change in customer[PENDING_STATUS_CHANGES]]}}}})
            for customer in pending], ordered=False)


def _link(key: str, call: CustomerCall, link_id: Callable[[str], str]) -> UpdateOne:
    """The call counted on the number `key`; `applied` once the customer holds it."""
    return UpdateOne({"_id": link_id(call.call_id)},
                     {"$set": {"phone": key, "at": call.at}, "$setOnInsert": {"callId": call.call_id, "applied": False}},
                     upsert=True)
