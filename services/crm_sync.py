"""Job 1, the fast path: Bolna executions -> `customers`, one record per phone number."""
from __future__ import annotations

from pymongo.database import Database

from models.customer import CustomerCall, customer_call, customer_upsert
from models.execution import Execution, execution_id
from services.bulk import bulk_upsert
from services.run_record import RunRecorder, utcnow
from services.storage import CUSTOMERS
from utils.phone import Phone, lookup_keys, mask_phone, normalize_phone


class CrmSync:
    name = "crm_sync"

    def __init__(self, db: Database, region: str):
        self.customers = db[CUSTOMERS]
        self.region = region

    def unchanged(self, items: list[dict]) -> set[str]:
        """Calls already counted on a customer: a terminal call's customer data is final."""
        ids = [call_id for item in items if (call_id := execution_id(item))]
        if not ids:
            return set()
        wanted = set(ids)
        found: set[str] = set()
        for customer in self.customers.find({"callIds": {"$in": ids}}, {"callIds": 1, "_id": 0}):
            found.update(wanted.intersection(customer.get("callIds", ())))
        return found

    def _existing(self, phones: list[Phone]) -> dict[str, object]:
        """Customer ids by phone key, found under any spelling of the number in one query, so
        that records stored before normalization are updated, not duplicated. Where several
        spellings of one number exist, the record already keyed by the normalized number wins."""
        keys = {phone.key: lookup_keys(phone) for phone in phones}
        spellings = [spelling for variants in keys.values() for spelling in variants]
        stored = {doc["phone"]: doc["_id"]
                  for doc in self.customers.find({"phone": {"$in": spellings}}, {"phone": 1})}
        return {key: next(stored[s] for s in variants if s in stored)
                for key, variants in keys.items() if any(s in stored for s in variants)}

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> None:
        by_phone: dict[str, tuple[Phone, list[CustomerCall]]] = {}
        for execution in executions:
            if not execution.terminal:
                continue  # its outcome and extracted data are not final yet; a later run takes it
            phone = normalize_phone(execution.customer_number, self.region)
            if phone is None:
                recorder.error(f"call {execution.id} has no customer phone number; no customer written",
                               code="no_phone", call_id=execution.id, agent_id=agent_id)
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
        now = utcnow()
        existing = self._existing([phone for phone, _ in by_phone.values()])
        inserted, updated = bulk_upsert(self.customers, [
            customer_upsert(phone, calls, now, existing.get(phone.key)) for phone, calls in by_phone.values()])
        recorder.add("inserted", inserted, agent_id)
        recorder.add("updated", updated, agent_id)
