"""The long-lived objects of one BFF process, built at start-up from Settings."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bff import shared_state
from bff.clickhouse import ClickHouseStore
from bff.identity.authenticate import Authenticator
from bff.identity.role_sources import RoleSource, build_role_source
from bff.media.service import ImageService
from bff.policy.access import AccessPolicy
from bff.policy.budget_alerts import BudgetAlerts
from bff.policy.budgets import BudgetGuard
from bff.policy.early_retries import EarlyRetries
from bff.policy.experiments import Experiments, load_experiments
from bff.policy.fallbacks import FallbackPolicy
from bff.policy.model import load_policy
from bff.policy.rate_counters import MemoryCounters, RateCounters, RedisCounters
from bff.policy.rate_limits import RateLimiter
from bff.policy.routing import TaskRouter, load_router
from bff.policy.spend_ledger import MemoryLedger, RedisLedger, SpendLedger
from bff.readiness import SteadyProbe
from bff.settings import Settings
from bff.shared_state import Redis
from bff.telemetry.tracing import Telemetry
from bff.upstream.catalog import CatalogCache
from bff.upstream.litellm import LiteLLMClient
from bff.upstream.ollama import OllamaClient
from bff.usage.feedback_sync import FeedbackSync
from bff.usage.users import UserDirectory


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
    budget_alerts: BudgetAlerts
    limits: RateLimiter
    early_retries: EarlyRetries  # 429s of callers back before their Retry-After are held
    redis: Redis | None  # shared state of replicas (REDIS_URL), else None: in this process
    ollama: OllamaClient
    router: TaskRouter
    experiments: Experiments
    images: ImageService
    users: UserDirectory  # people by name (otel.gateway_users), written off the request path
    feedback: FeedbackSync  # Open-WebUI ratings pulled into otel.gateway_feedback (started by the app)

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        policy = load_policy(settings.policy_file)  # invalid policy: refuse to start
        access = AccessPolicy(policy)
        fallbacks = FallbackPolicy(access)
        role_source = build_role_source(settings)
        litellm = LiteLLMClient(settings)
        store = ClickHouseStore(settings.clickhouse_url, settings.clickhouse_schema_dir)
        redis = shared_state.connect(settings)
        ledger: SpendLedger
        counters: RateCounters
        if redis is None:
            ledger = MemoryLedger(delivery_reports=not settings.otel_exporter_otlp_endpoint)
            counters = MemoryCounters()
        else:
            ledger, counters = RedisLedger(redis, settings.budget_cache_seconds), RedisCounters(redis)
        budgets = BudgetGuard(access, store, settings.budget_cache_seconds, ledger)
        # a slot outlives the longest call; a replica that dies mid-call frees its slots then
        lease_seconds = settings.upstream_timeout_seconds + settings.stream_usage_grace_seconds + 60
        alerts = BudgetAlerts.build(settings, access, budgets, store, redis)
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
            budget_alerts=alerts,
            limits=RateLimiter(access, counters, lease_seconds),
            early_retries=EarlyRetries(
                settings.refusal_hold_seconds, settings.refusal_max_held_per_user, settings.refusal_max_held
            ),
            redis=redis,
            ollama=OllamaClient(settings),
            router=load_router(settings.routing_file, settings.generator_mode),
            experiments=load_experiments(settings.experiments_file),  # invalid file: refuse to start
            images=ImageService.build(settings, budgets, redis, alerts),  # invalid workflows: refuse to start
            users=UserDirectory(store),
            feedback=FeedbackSync(settings, store),
        )

    async def aclose(self) -> None:
        await self.budget_alerts.aclose()  # deliveries still running get a few seconds
        await self.images.aclose()  # running jobs end their spans before telemetry shuts down
        await self.litellm.aclose()
        await self.ollama.aclose()
        await self.role_source.aclose()
        await self.users.aclose()  # the last names seen, before the store closes
        self.telemetry.shutdown()  # flushes the last spans
        self.store.close()
        if self.redis is not None:
            await self.redis.aclose()


# Dependencies are `async` on purpose: FastAPI runs plain functions on a worker thread.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
