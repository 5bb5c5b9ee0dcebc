"""The accounts to serve (TENANT_SOURCE): the one of BOLNA_API_KEY, or those of the CRM's
accounts collection, each with its keys made plain. An account that cannot be served is skipped
and reported, and never keeps the others from running."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from bson import ObjectId
from pymongo.database import Database

from services.tenancy.document import projection, tenant_from_document
from services.tenancy.keys import KeyReader
from services.tenancy.tenant import Tenant, UnusableTenant
from utils.config import ConfigError, Settings

log = logging.getLogger(__name__)

_COPY = "_id is a string that spells another account's ObjectId: their records' ids would be one"


@dataclass(frozen=True)
class SkippedTenant:
    id: object
    reason: str  # names fields, never a key


@dataclass(frozen=True)
class TenantList:
    tenants: tuple[Tenant, ...]
    skipped: tuple[SkippedTenant, ...] = ()


class TenantSource:
    def __init__(self, settings: Settings, db: Database | None = None):
        """Checks what can be checked at start-up (the secret), so a mistake stops the daemon
        once instead of skipping every account at every load."""
        self._settings = settings
        if settings.tenant_source == "mongodb":
            if db is None:
                raise ConfigError("TENANT_SOURCE=mongodb reads the accounts from MongoDB: a database is needed")
            self._keys = KeyReader.from_secret(settings.tenant_keys_secret)
            self._collection = db[settings.tenants_collection]
        else:
            Tenant.from_settings(settings)  # BOLNA_API_KEY must be set

    def load(self) -> TenantList:
        """The accounts as they are now; called again to follow the CRM's changes."""
        if self._settings.tenant_source != "mongodb":
            return TenantList((Tenant.from_settings(self._settings),))
        fields = self._settings.tenant_fields
        tenants: list[Tenant] = []
        skipped: list[SkippedTenant] = []
        documents = self._collection.find(self._settings.tenants_query, projection=projection(fields),
                                          sort=[("_id", 1)])
        for document in documents:
            try:
                tenants.append(tenant_from_document(document, fields, self._keys))
            except UnusableTenant as exc:
                skipped.append(SkippedTenant(exc.tenant_id, exc.reason))
                log.warning("tenant %s skipped: %s", exc.tenant_id, exc.reason, extra={"event": "tenant_skipped"})
        copies = self._spelled_as_an_object_id(tenants)
        for tenant in (t for t in tenants if t.id in copies):
            skipped.append(SkippedTenant(tenant.id, _COPY))
            log.warning("tenant %s skipped: %s", tenant.id, _COPY, extra={"event": "tenant_skipped"})
        return TenantList(tuple(t for t in tenants if t.id not in copies), tuple(skipped))

    def find(self, tenant_id: object) -> Tenant | None:
        """The account `tenant_id` when TENANTS_FILTER lists it (else None); UnusableTenant, with
        the reason, when it is listed but cannot be served."""
        fields = self._settings.tenant_fields
        document = self._collection.find_one({"$and": [self._settings.tenants_query, {"_id": tenant_id}]},
                                             projection=projection(fields))
        if document is None:
            return None
        tenant = tenant_from_document(document, fields, self._keys)
        if self._spelled_as_an_object_id([tenant]):
            raise UnusableTenant(tenant.id, _COPY)
        return tenant

    def _spelled_as_an_object_id(self, tenants) -> set:
        """The string ids of `tenants` that spell another account's ObjectId: the ids of their
        records (`local_id`) and their webhook token would be that account's."""
        spelled = {ObjectId(t.id): t.id for t in tenants
                   if isinstance(t.id, str) and ObjectId.is_valid(t.id) and str(ObjectId(t.id)) == t.id}
        if not spelled:
            return set()
        return {spelled[d["_id"]] for d in self._collection.find({"_id": {"$in": list(spelled)}}, {"_id": 1})}
