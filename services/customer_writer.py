"""The CRM sync's writer: Bolna executions -> `customers`, one record per phone number."""
from __future__ import annotations

from pymongo.database import Database

from models.customer import CustomerCall, customer_call, customer_upsert
from models.execution import Execution, execution_id
from services.bulk import bulk_upsert
from services.database import CUSTOMERS
from services.phone_lookup import ids_by_phone
from services.run_records import RunRecorder
from utils.clock import utcnow
from utils.phone import Phone, mask_phone


class CustomerWriter:
    def __init__(self, db: Database):
        self.customers = db[CUSTOMERS]

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

    def write(self, executions: list[Execution], recorder: RunRecorder, agent_id: str) -> None:
        by_phone: dict[str, tuple[Phone, list[CustomerCall]]] = {}
        for execution in executions:
            if not execution.terminal:
                continue  # its outcome and extracted data are not final yet; a later run takes it
            phone = execution.customer_phone
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
        existing = ids_by_phone(self.customers, [phone for phone, _ in by_phone.values()])
        inserted, updated = bulk_upsert(self.customers, [
            customer_upsert(phone, calls, now, existing.get(phone.key)) for phone, calls in by_phone.values()])
        recorder.add("inserted", inserted, agent_id)
        recorder.add("updated", updated, agent_id)
