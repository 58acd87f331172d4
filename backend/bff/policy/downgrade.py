"""Graceful degradation: past a budget with `when_exceeded: downgrade`, chat is served by
the cheaper `downgrade_to` instead of being refused (until the hard ceiling).

Checked when the catalog first loads (start-up): every `downgrade_to` must be a chat model
that its role or group may use and that costs less than the dearest chat model it may use.
"""

import logging
from collections.abc import Iterator

from bff.identity.principal import Principal
from bff.policy.access import AccessPolicy
from bff.policy.model import Budget, ModelAccess, Policy, WhenExceeded
from bff.policy.models import may_use
from bff.upstream.catalog import CHAT_MODES, Catalog, ModelEntry

log = logging.getLogger("bff.downgrade")

DOWNGRADED_HEADER = "x-gateway-downgraded-from"


def price(entry: ModelEntry) -> float | None:
    """Input plus output USD per token: what 'costs less' compares."""
    if entry.input_cost_per_token is None and entry.output_cost_per_token is None:
        return None
    return (entry.input_cost_per_token or 0.0) + (entry.output_cost_per_token or 0.0)


def target_for(access: AccessPolicy, catalog: Catalog, principal: Principal, name: str) -> ModelEntry | None:
    """The downgrade model, when it is a chat model the caller may use (else None: refuse)."""
    target = catalog.get(name)
    if target is None or target.mode not in CHAT_MODES or not may_use(access, catalog, principal, target):
        return None
    return target


def costs_no_more(catalog: Catalog, requested: ModelEntry, target: ModelEntry) -> bool:
    """The asked model is the downgrade model, or no dearer: it is served as asked."""
    if target.group == requested.group:
        return True
    target_price, requested_price = price(target), price(catalog.get(requested.group) or requested)
    return target_price is not None and requested_price is not None and requested_price <= target_price


def _tier(catalog: Catalog, entry: ModelEntry) -> str | None:
    group = catalog.get(entry.group)
    return group.tier if group else entry.tier


def _sources(policy: Policy) -> Iterator[tuple[str, Budget, tuple[ModelAccess, ...]]]:
    user_access = policy.roles.user.models
    yield "budgets.roles.user", policy.budgets.roles.user, (user_access,)
    yield "budgets.roles.admin", policy.budgets.roles.admin, (ModelAccess(include=["*"]),)
    for name, group in policy.groups.items():
        if group.budget is not None:
            yield f"groups.{name}.budget", group.budget, (user_access, group.models)


def problems(policy: Policy, catalog: Catalog) -> list[str]:
    """What is wrong with the policy's downgrade targets against this catalog."""
    found: list[str] = []
    chat = [entry for entry in catalog.models.values() if entry.mode in CHAT_MODES and entry.name == entry.group]
    for where, budget, access in _sources(policy):
        if budget.when_exceeded is not WhenExceeded.downgrade or budget.downgrade_to is None:
            continue
        target = catalog.get(budget.downgrade_to)
        allowed = [entry for entry in chat if any(a.allows(entry.group, entry.tier) for a in access)]
        if target is None:
            found.append(f"{where}.downgrade_to '{budget.downgrade_to}' is not a LiteLLM model")
        elif target.mode not in CHAT_MODES:
            found.append(f"{where}.downgrade_to '{budget.downgrade_to}' is a {target.mode} model, not a chat model")
        elif not any(a.allows(target.group, _tier(catalog, target)) for a in access):
            found.append(f"{where}.downgrade_to '{budget.downgrade_to}' is a model its users may not use")
        else:
            target_price = price(target)
            dearest = max((p for p in (price(entry) for entry in allowed) if p is not None), default=None)
            if target_price is None or dearest is None or target_price >= dearest:
                found.append(f"{where}.downgrade_to '{budget.downgrade_to}' does not cost less than the models its users may use")
    return found
