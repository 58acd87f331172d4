"""Decisions: may this principal do that, or use this model."""

from bff.errors import forbidden
from bff.identity.principal import Principal, Role
from bff.policy.model import Permission, Policy


class AccessPolicy:
    def __init__(self, policy: Policy):
        self.policy = policy

    def has(self, principal: Principal, permission: Permission) -> bool:
        if principal.role is Role.admin:
            return True
        if principal.role is Role.user:
            return permission in self.policy.roles.user.permissions
        return False  # a bare service key holds no permission; it may only list models

    def require(self, principal: Principal, permission: Permission) -> None:
        if principal.is_service_only:
            raise forbidden("a service key without a forwarded user may only list models", "user_identity_required")
        if not self.has(principal, permission):
            raise forbidden(f"role '{principal.role}' lacks the '{permission}' permission", "permission_denied")

    def may_use_model(self, principal: Principal, group: str, tier: str | None) -> bool:
        if principal.role is Role.admin or principal.is_service_only:
            # Open-WebUI lists models with its bare service key and applies its own model access.
            return True
        if principal.role is Role.user:
            return self.policy.roles.user.models.allows(group, tier)
        return False
