"""Fallbacks inside the policy: the model that serves a call is always one the caller may use.

LiteLLM runs its configured chains (router_settings: fallbacks, context_window_fallbacks,
content_policy_fallbacks) for anyone calling with the master key, and a request-level
list replaces a configured one (router.py `kwargs.get("fallbacks", self.fallbacks)`).
So every chat tells LiteLLM its chains, cut to the targets the caller may use, for
every group the call could reach; a group left with no target does not fall back.
"""

import logging
from typing import Any

from bff.identity.principal import AuthMethod, Principal, Role
from bff.policy.access import AccessPolicy
from bff.policy.models import may_use
from bff.upstream.catalog import FALLBACK_KINDS, Catalog, ModelEntry

log = logging.getLogger("bff.policy")


class FallbackPolicy:
    def __init__(self, access: AccessPolicy):
        self._access = access
        self._reported: set[str] = set()

    def _allowed(self, principal: Principal, catalog: Catalog, name: str) -> bool:
        entry = catalog.get(name)
        return entry is not None and may_use(self._access, catalog, principal, entry)

    def request_controls(self, principal: Principal, entry: ModelEntry, catalog: Catalog) -> dict[str, Any]:
        """The body fields that give LiteLLM only the caller's fallback targets."""
        controls: dict[str, Any] = {}
        for kind in FALLBACK_KINDS:
            chains: dict[str, list[str]] = {}
            pending = [entry.name, entry.group]
            while pending:  # every group a fallback could reach, each with its own allowed targets
                group = pending.pop()
                if group in chains:
                    continue
                chains[group] = [t for t in catalog.chain(kind, group) if self._allowed(principal, catalog, t)]
                pending.extend(chains[group])
            controls[kind] = [{group: targets} for group, targets in chains.items()]
        return controls

    def form_controls(self, principal: Principal, entry: ModelEntry, catalog: Catalog) -> dict[str, Any]:
        """The same cut for a multipart call, whose fields are strings: LiteLLM reads repeated
        `fallbacks[]` as a plain list of targets for any failure. With no allowed target, the
        model itself (a retry of the same group) stands in for "none", which a form cannot say."""
        targets: list[str] = []
        for kind in FALLBACK_KINDS:
            targets += [t for t in catalog.chain(kind, entry.group) if t not in targets and self._allowed(principal, catalog, t)]
        return {"fallbacks": targets or [entry.group]}

    def served_outside(self, principal: Principal, served: str, catalog: Catalog) -> bool:
        """True when LiteLLM served a model the caller may not use: a bug, never expected."""
        return catalog.get(served) is not None and not self._allowed(principal, catalog, served)

    def report(self, catalog: Catalog) -> None:
        """Names, once, every configured chain that crosses the user role's model access."""
        user = Principal(user_id="policy-check", role=Role.user, auth=AuthMethod.session_token)
        for kind in FALLBACK_KINDS:
            for group, targets in catalog.fallbacks.get(kind, {}).items():
                if group not in catalog.models or not self._allowed(user, catalog, group):
                    continue
                for target in targets:
                    crossing = f"{kind}: {group} -> {target}"
                    if not self._allowed(user, catalog, target) and crossing not in self._reported:
                        self._reported.add(crossing)
                        log.warning(
                            "fallback chain %s crosses role 'user''s model access: users of %s are not fallen back to %s",
                            crossing, group, target,
                        )
