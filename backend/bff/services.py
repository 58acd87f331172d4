"""The long-lived objects of one BFF process, built at start-up from Settings."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bff.clickhouse import ClickHouseStore
from bff.identity.authenticate import Authenticator
from bff.identity.role_sources import RoleSource, build_role_source
from bff.media.service import ImageService
from bff.policy.access import AccessPolicy
from bff.policy.budgets import BudgetGuard
from bff.policy.fallbacks import FallbackPolicy
from bff.policy.model import load_policy
from bff.policy.routing import TaskRouter, load_router
from bff.readiness import SteadyProbe
from bff.settings import Settings
from bff.telemetry.tracing import Telemetry
from bff.upstream.catalog import CatalogCache
from bff.upstream.litellm import LiteLLMClient
from bff.upstream.ollama import OllamaClient


@dataclass
class Services:
    settings: Settings
    role_source: RoleSource
    authenticator: Authenticator
    access: AccessPolicy
    fallbacks: FallbackPolicy
    litellm: LiteLLMClient
    litellm_probe: SteadyProbe
    catalog: CatalogCache
    store: ClickHouseStore
    telemetry: Telemetry
    budgets: BudgetGuard
    ollama: OllamaClient
    router: TaskRouter
    images: ImageService

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        policy = load_policy(settings.policy_file)  # invalid policy: refuse to start
        access = AccessPolicy(policy)
        fallbacks = FallbackPolicy(access)
        role_source = build_role_source(settings)
        litellm = LiteLLMClient(settings)
        store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_schema_dir)
        budgets = BudgetGuard(
            access, store, settings.budget_cache_seconds, delivery_reports=not settings.otel_exporter_otlp_endpoint
        )
        return cls(
            settings=settings,
            role_source=role_source,
            authenticator=Authenticator(settings, role_source),
            access=access,
            fallbacks=fallbacks,
            litellm=litellm,
            litellm_probe=SteadyProbe(litellm, settings.readiness_grace_seconds),
            catalog=CatalogCache(litellm, settings.catalog_ttl_seconds, on_load=fallbacks.report),
            store=store,
            telemetry=Telemetry(settings, store, on_delivered=budgets.delivered),
            budgets=budgets,
            ollama=OllamaClient(settings),
            router=load_router(settings.routing_file, settings.generator_mode),
            images=ImageService.build(settings, budgets),  # invalid workflows: refuse to start
        )

    async def aclose(self) -> None:
        await self.images.aclose()  # running jobs end their spans before telemetry shuts down
        await self.litellm.aclose()
        await self.ollama.aclose()
        await self.role_source.aclose()
        self.telemetry.shutdown()  # flushes the last spans
        self.store.close()


# Dependencies are `async` on purpose: FastAPI runs plain functions on a worker thread.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
