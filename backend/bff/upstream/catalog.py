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
from typing import Any

from pydantic import BaseModel, Field

from bff.errors import ApiError, unavailable
from bff.upstream.litellm import LiteLLMClient

log = logging.getLogger("bff.catalog")

PER_MILLION = 1_000_000


class ModelEntry(BaseModel):
    name: str = Field(description="the name callers use (a group or an alias)")
    group: str = Field(description="the model group the name resolves to")
    tier: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    description: str | None = None
    provider: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    deployment_ids: list[str] = Field(default_factory=list)
    openai_object: dict[str, Any] = Field(default_factory=dict, description="LiteLLM's /v1/models item")

    def price_per_million(self, per_token: float | None) -> float | None:
        return None if per_token is None else round(per_token * PER_MILLION, 6)


class Catalog(BaseModel):
    models: dict[str, ModelEntry]
    provider_by_deployment: dict[str, str]
    prices_by_deployment: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=dict, description="USD per input and per output token, by LiteLLM deployment id"
    )

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)


def build_catalog(model_info: list[dict[str, Any]], openai_models: list[dict[str, Any]]) -> Catalog:
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
    prices: dict[str, tuple[float | None, float | None]] = {}
    for name, infos in by_name.items():
        first = infos[0]
        ids = [info["id"] for info in infos if info.get("id")]
        for info in infos:
            if info.get("id"):
                prices[info["id"]] = (info.get("input_cost_per_token"), info.get("output_cost_per_token"))
                if info.get("litellm_provider"):
                    providers[info["id"]] = info["litellm_provider"]
        models[name] = ModelEntry(
            name=name,
            group=group_of_deployment.get(ids[0], name) if ids else name,
            tier=first.get("gateway_tier"),
            capabilities=list(first.get("gateway_capabilities") or []),
            description=first.get("gateway_description"),
            provider=first.get("litellm_provider"),
            input_cost_per_token=first.get("input_cost_per_token"),
            output_cost_per_token=first.get("output_cost_per_token"),
            deployment_ids=ids,
            openai_object=objects.get(name) or {"id": name, "object": "model", "created": 0, "owned_by": "litellm"},
        )
    return Catalog(models=models, provider_by_deployment=providers, prices_by_deployment=prices)


class CatalogCache:
    """Refreshes from LiteLLM at most once per TTL, one refresh at a time."""

    def __init__(self, client: LiteLLMClient, ttl_seconds: float):
        self._client = client
        self._ttl = ttl_seconds
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
                info, listing = await asyncio.gather(self._client.get_json("/model/info"), self._client.get_json("/v1/models"))
                self._catalog = build_catalog(info.get("data", []), listing.get("data", []))
                self._fetched_at = time.monotonic()
            except ApiError as exc:
                if self._catalog is None:
                    raise unavailable("the model catalog is unavailable: LiteLLM did not answer", "catalog_unavailable") from exc
                log.warning("catalog refresh failed (%s); serving the previous catalog", exc.code)
                self._fetched_at = time.monotonic() - self._ttl / 2  # retry soon, not on every request
            return self._catalog
