"""GET /api/models: the model catalog for the caller, with tiers, prices and access."""

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from bff.errors import bad_request
from bff.pipeline.operations import CallerCall
from bff.policy.models import may_use
from bff.services import ServicesDep

router = APIRouter(prefix="/api", tags=["catalog"])


class CatalogModel(BaseModel):
    id: str
    group: str = Field(description="the model group this name resolves to (differs for aliases)")
    tier: str | None
    capabilities: list[str]
    description: str | None
    provider: str | None
    input_price_per_1m: float | None = Field(description="USD per 1M input tokens")
    output_price_per_1m: float | None = Field(description="USD per 1M output tokens")
    allowed: bool = Field(description="whether the caller's role may use it")


class CatalogResponse(BaseModel):
    data: list[CatalogModel]
    tiers: list[str]


@router.get("/models", response_model=CatalogResponse, summary="Model catalog for the caller")
async def model_catalog(
    services: ServicesDep,
    call: CallerCall,
    tier: str | None = Query(default=None, max_length=64, description="only models of this tier"),
) -> CatalogResponse:
    tiers = services.access.policy.tiers
    if tier is not None and tier not in tiers:
        raise bad_request(f"invalid field 'tier': must be one of {tiers}")
    catalog = await services.catalog.get()
    models = [
        CatalogModel(
            id=entry.name,
            group=entry.group,
            tier=entry.tier,
            capabilities=entry.capabilities,
            description=entry.description,
            provider=entry.provider,
            input_price_per_1m=entry.price_per_million(entry.input_cost_per_token),
            output_price_per_1m=entry.price_per_million(entry.output_cost_per_token),
            allowed=may_use(services.access, catalog, call.caller, entry),
        )
        for entry in sorted(catalog.models.values(), key=lambda e: e.name)
        if tier is None or entry.tier == tier
    ]
    return CatalogResponse(data=models, tiers=tiers)
