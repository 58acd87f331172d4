"""Which catalog models a principal may see and call."""

from bff.errors import forbidden, not_found
from bff.identity.principal import Principal
from bff.policy.access import AccessPolicy
from bff.upstream.catalog import Catalog, ModelEntry


def may_use(access: AccessPolicy, catalog: Catalog, principal: Principal, entry: ModelEntry) -> bool:
    target = catalog.get(entry.group) or entry
    return access.may_use_model(principal, target.name, target.tier)


def authorize_model(access: AccessPolicy, catalog: Catalog, principal: Principal, name: str) -> ModelEntry:
    entry = catalog.get(name)
    if entry is None:
        raise not_found(f"model '{name}' does not exist", "model_not_found")
    if not may_use(access, catalog, principal, entry):
        raise forbidden(f"model '{name}' is not allowed for role '{principal.role}'", "model_not_allowed")
    return entry
