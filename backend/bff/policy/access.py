"""Decisions: may this principal do that, or use this model (by their effective policy)."""

from bff.errors import forbidden
from bff.identity.principal import Principal
from bff.policy.effective import EffectivePolicies, EffectivePolicy
from bff.policy.model import Permission, Policy


class AccessPolicy:
    def __init__(self, policy: Policy):
        self.policy = policy
        self._effective = EffectivePolicies(policy)

    def effective(self, principal: Principal) -> EffectivePolicy:
        """The caller's role combined with their Open-WebUI groups (policy/effective.py)."""
        return self._effective.of(principal)

    def has(self, principal: Principal, permission: Permission) -> bool:
        if principal.is_service_only:
            return False  # a bare service key holds no permission; it may only list models
        return permission in self.effective(principal).permissions

    def require(self, principal: Principal, permission: Permission) -> None:
        if principal.is_service_only:
            raise forbidden("a service key without a forwarded user may only list models", "user_identity_required")
        if not self.has(principal, permission):
            raise forbidden(f"role '{principal.role}' lacks the '{permission}' permission", "permission_denied")

    def may_use_model(self, principal: Principal, group: str, tier: str | None) -> bool:
        if principal.is_service_only:
            # Open-WebUI lists models with its bare service key and applies its own model access.
            return True
        return self.effective(principal).allows_model(group, tier)
