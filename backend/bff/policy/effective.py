"""A user's effective policy: their role combined with their Open-WebUI groups.

Groups only ever add, as Open-WebUI's own group permissions do (the most permissive wins):
- permissions: the role's and every group's;
- models: allowed when the role's or any group's model access allows it (each source's
  `exclude` narrows only that source: a group cannot take away what the role gives);
- budgets and limits: per field, the larger of the role's and the groups' (an explicit
  `null` is unlimited and wins). A group grants a budget or a limit; a small one in some
  group cannot shrink what the role allows. Past the budget `downgrade` beats `refuse`
  (it serves more), with the `downgrade_to` of the first source that says so (role first,
  then groups in the policy file's order);
- then `budgets.users` / `limits.users` override single fields for one user, exactly.
Admins have every permission and model; their budgets and limits combine the same way.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from cachetools import LRUCache

from bff.identity.principal import Principal, Role
from bff.policy.model import Budget, Limits, ModelAccess, Permission, Policy, WhenExceeded

_EVERYTHING = ModelAccess(include=["*"])
_AMOUNTS = ("daily_usd", "monthly_usd", "hard_daily_usd", "hard_monthly_usd")
_COUNTS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests")


@dataclass(frozen=True)
class EffectivePolicy:
    permissions: frozenset[Permission]
    models: tuple[ModelAccess, ...]  # a model is allowed when any of them allows it
    budget: Budget
    limits: Limits

    def allows_model(self, group: str, tier: str | None) -> bool:
        return any(access.allows(group, tier) for access in self.models)


def _larger(current: Decimal | int | None, offered: Decimal | int | None) -> Decimal | int | None:
    """None is unlimited."""
    if current is None or offered is None:
        return None
    return max(current, offered)


def combine_budgets(base: Budget, grants: Iterable[Budget]) -> Budget:
    merged = base.model_dump()
    downgrade = base.when_exceeded is WhenExceeded.downgrade
    for grant in grants:
        given = grant.model_dump(exclude_unset=True)
        for field in _AMOUNTS:
            if field in given:
                merged[field] = _larger(merged[field], given[field])
        if grant.when_exceeded is WhenExceeded.downgrade and not downgrade:
            downgrade = True
            merged["when_exceeded"], merged["downgrade_to"] = WhenExceeded.downgrade, grant.downgrade_to
    return Budget.model_validate(merged)


def combine_limits(base: Limits, grants: Iterable[Limits]) -> Limits:
    merged = base.model_dump()
    for grant in grants:
        given = grant.model_dump(exclude_unset=True)
        for field in _COUNTS:
            if field in given:
                merged[field] = _larger(merged[field], given[field])
    return Limits.model_validate(merged)


class EffectivePolicies:
    """Computes and caches the effective policy of (role, groups, user id)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._cache: LRUCache[tuple[Role, tuple[str, ...], str], EffectivePolicy] = LRUCache(10_000)

    def of(self, principal: Principal) -> EffectivePolicy:
        assert principal.role is not None and principal.user_id is not None  # a bare service key has no policy
        key = (principal.role, principal.groups, principal.user_id)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._compute(*key)
        return cached

    def _compute(self, role: Role, groups: tuple[str, ...], user_id: str) -> EffectivePolicy:
        policy = self.policy
        # in the policy file's order, so "the first group that says downgrade" is stable
        mine = [group for name, group in policy.groups.items() if name in groups]
        models: tuple[ModelAccess, ...]
        if role is Role.admin:
            permissions, models = frozenset(Permission), (_EVERYTHING,)
            role_budget, role_limits = policy.budgets.roles.admin, policy.limits.roles.admin
        else:
            base = policy.roles.user
            permissions = frozenset(base.permissions).union(*(group.permissions for group in mine))
            models = (base.models, *(group.models for group in mine))
            role_budget, role_limits = policy.budgets.roles.user, policy.limits.roles.user
        budget = combine_budgets(role_budget, (group.budget for group in mine if group.budget is not None))
        limits = combine_limits(role_limits, (group.limits for group in mine if group.limits is not None))
        return EffectivePolicy(
            permissions=permissions,
            models=models,
            budget=budget.overridden_by(policy.budgets.users.get(user_id)),
            limits=limits.overridden_by(policy.limits.users.get(user_id)),
        )
