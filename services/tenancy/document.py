"""An account document mapped to a Tenant through the field map (TENANT_FIELDS): each value is
checked here, so a malformed account is refused whole, with its reason, before it runs."""
from __future__ import annotations

from typing import Mapping

from services.tenancy.keys import KeyReader
from services.tenancy.scoped import account_id_problem
from services.tenancy.tenant import Tenant, UnusableTenant
from utils import config_values


def read_path(document: Mapping, path: str) -> object:
    """The value at a dotted path, or None when any step is missing or not an object (a list on
    the way is not fanned out as a query would: an account has one value per setting)."""
    value: object = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def projection(fields: Mapping[str, str]) -> dict[str, int]:
    """Only the mapped fields are read (the documents are the CRM's users: they hold far more).
    A path inside another projected one is dropped, since MongoDB refuses the pair as a path
    collision."""
    paths = set(fields.values())
    kept = [path for path in paths
            if not any(path.startswith(other + ".") for other in paths if other != path)]
    return {path: 1 for path in sorted(kept)}


def tenant_from_document(document: Mapping, fields: Mapping[str, str], keys: KeyReader) -> Tenant:
    tenant_id = document["_id"]
    if (problem := account_id_problem(tenant_id)) is not None:
        raise UnusableTenant(tenant_id, problem)

    def key(name: str, required: bool) -> str | None:
        path = fields[name]
        stored = read_path(document, path)
        if stored is None or (isinstance(stored, str) and not stored.strip()):
            if required:
                raise UnusableTenant(tenant_id, f"{path} is missing or empty")
            return None
        if not isinstance(stored, str):
            raise UnusableTenant(tenant_id, f"{path} is not a string")
        return keys.plain(stored, tenant_id=tenant_id, field=path)

    return Tenant(
        id=tenant_id,
        bolna_api_key=key("bolnaApiKey", required=True),
        agent_ids=_agent_ids(document, fields["agentIds"], tenant_id),
        groq_api_key=key("groqApiKey", required=False),
        phone_region=_region(document, fields["phoneRegion"], tenant_id),
        llm_batch_limit=_positive_int(document, fields["llmBatchLimit"], tenant_id),
        bolna_requests_per_minute=_positive_int(document, fields["bolnaRequestsPerMinute"], tenant_id),
    )


def _agent_ids(document: Mapping, path: str, tenant_id: object) -> tuple[str, ...]:
    value = read_path(document, path)
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item.strip() for item in value):
        raise UnusableTenant(tenant_id, f"{path} must be a list of agent ids (non-empty strings)")
    return tuple(dict.fromkeys(item.strip() for item in value))


def _region(document: Mapping, path: str, tenant_id: object) -> str | None:
    value = read_path(document, path)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UnusableTenant(tenant_id, f"{path} must be a region code such as IN or US")
    try:
        return config_values.region(value)
    except ValueError as exc:
        raise UnusableTenant(tenant_id, f"{path} {exc} (got {value!r})") from None


def _positive_int(document: Mapping, path: str, tenant_id: object) -> int | None:
    value = read_path(document, path)
    if value is None:
        return None
    # A CRM in JavaScript stores every number as a double: 20.0 is the 20 it meant.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UnusableTenant(tenant_id, f"{path} must be a whole number of at least 1 (got {value!r})")
    return value
