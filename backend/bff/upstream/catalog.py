"""The model catalog: LiteLLM's model groups with the gateway's metadata.

Each deployment in config/litellm.yaml carries `model_info.gateway_tier`,
`gateway_capabilities` and `gateway_description` (LiteLLM reserves `tier`).
Aliases (router_settings.model_group_alias) appear in /model/info with the same
deployment id as their target; the catalog resolves them to that group so the
policy judges an alias exactly like the group it points to.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from bff.errors import unavailable
from bff.upstream.litellm import LiteLLMClient, UpstreamError

log = logging.getLogger("bff.catalog")

PER_MILLION = 1_000_000
CHAT_MODES = frozenset({"chat", None})  # LiteLLM reports no mode for custom names; it serves them as chat
# Metadata, not answers: its own bound, whatever UPSTREAM_TIMEOUT_SECONDS allows a model.
LOAD_TIMEOUT_SECONDS = 10.0


class ModelEntry(BaseModel):
    name: str = Field(description="the name callers use (a group or an alias)")
    group: str = Field(description="the model group the name resolves to")
    tier: str | None = None
    mode: str | None = Field(default=None, description="LiteLLM's model_info.mode: chat, embedding, audio_speech, ...")
    capabilities: list[str] = Field(default_factory=list)
    description: str | None = None
    provider: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    deployment_ids: list[str] = Field(default_factory=list)
    openai_object: dict[str, Any] = Field(default_factory=dict, description="LiteLLM's /v1/models item")

    def price_per_million(self, per_token: float | None) -> float | None:
        return None if per_token is None else round(per_token * PER_MILLION, 6)


FALLBACK_KINDS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
ANY_GROUP = "*"  # LiteLLM's generic chain, for groups without their own


def parse_chains(value: Any) -> dict[str, list[str]]:
    """LiteLLM's `[{group: [targets]}]` router setting as group -> targets."""
    chains: dict[str, list[str]] = {}
    for item in value if isinstance(value, list) else ():
        if isinstance(item, dict):
            for group, targets in item.items():
                if isinstance(targets, list):
                    chains[str(group)] = [str(target) for target in targets]
    return chains


class Catalog(BaseModel):
    models: dict[str, ModelEntry]
    fallbacks: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict, description="LiteLLM's configured chains: kind (FALLBACK_KINDS) -> group -> targets"
    )
    provider_by_deployment: dict[str, str]
    group_by_deployment: dict[str, str] = Field(default_factory=dict)

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def chain(self, kind: str, group: str) -> list[str]:
        chains = self.fallbacks.get(kind, {})
        return chains.get(group, chains.get(ANY_GROUP, []))


def build_catalog(
    model_info: list[dict[str, Any]], openai_models: list[dict[str, Any]], router_settings: dict[str, Any] | None = None
) -> Catalog:
    group_of_deployment: dict[str, str] = {}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in model_info:
        name = item.get("model_name")
        info = item.get("model_info") or {}
        if not name:
            continue
        by_name.setdefault(name, []).append(info)
        if info.get("id"):
            group_of_deployment.setdefault(info["id"], name)  # real groups are listed before aliases

    objects = {obj.get("id"): obj for obj in openai_models}
    models: dict[str, ModelEntry] = {}
    providers: dict[str, str] = {}
    for name, infos in by_name.items():
        first = infos[0]
        ids = [info["id"] for info in infos if info.get("id")]
        for info in infos:
            if info.get("id") and info.get("litellm_provider"):
                providers[info["id"]] = info["litellm_provider"]
        models[name] = ModelEntry(
            name=name,
            group=group_of_deployment.get(ids[0], name) if ids else name,
            tier=first.get("gateway_tier"),
            mode=first.get("mode"),
            capabilities=list(first.get("gateway_capabilities") or []),
            description=first.get("gateway_description"),
            provider=first.get("litellm_provider"),
            input_cost_per_token=first.get("input_cost_per_token"),
            output_cost_per_token=first.get("output_cost_per_token"),
            deployment_ids=ids,
            openai_object=objects.get(name) or {"id": name, "object": "model", "created": 0, "owned_by": "litellm"},
        )
    settings = router_settings or {}
    fallbacks = {kind: parse_chains(settings.get(kind)) for kind in FALLBACK_KINDS}
    return Catalog(models=models, fallbacks=fallbacks, provider_by_deployment=providers, group_by_deployment=group_of_deployment)


class CatalogCache:
    """Refreshes from LiteLLM at most once per TTL, one refresh at a time."""

    def __init__(self, client: LiteLLMClient, ttl_seconds: float, on_load: Callable[[Catalog], None] | None = None):
        self._client = client
        self._ttl = ttl_seconds
        self._on_load = on_load
        self._catalog: Catalog | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Catalog:
        if self._catalog is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._catalog
        async with self._lock:
            if self._catalog is not None and time.monotonic() - self._fetched_at < self._ttl:
                return self._catalog
            try:
                info, listing, router = await asyncio.gather(
                    self._client.get_json("/model/info", LOAD_TIMEOUT_SECONDS),
                    self._client.get_json("/v1/models", LOAD_TIMEOUT_SECONDS),
                    self._client.get_json("/router/settings", LOAD_TIMEOUT_SECONDS),  # the fallback chains LiteLLM runs with
                )
                self._catalog = build_catalog(info.get("data", []), listing.get("data", []), router.get("current_values"))
                self._fetched_at = time.monotonic()
                if self._on_load is not None:
                    self._on_load(self._catalog)
            except (UpstreamError, ValueError, AttributeError) as exc:
                if self._catalog is None:
                    log.warning("catalog load failed: %s", type(exc).__name__)
                    raise unavailable("the model catalog is unavailable: LiteLLM did not answer", "catalog_unavailable") from None
                log.warning("catalog refresh failed (%s); serving the previous catalog", type(exc).__name__)
                self._fetched_at = time.monotonic() - self._ttl / 2  # retry soon, not on every request
            return self._catalog
