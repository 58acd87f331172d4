"""Builds the FastAPI application from Settings."""

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from redis.exceptions import RedisError

from bff import docs
from bff.errors import ApiError, ErrorResponse, install_error_handlers, unavailable
from bff.monitoring import pages as monitoring_pages
from bff.pipeline.context import REQUEST_ID_HEADER, RequestContextMiddleware
from bff.policy import downgrade, experiments
from bff.policy.budget_alerts import WARNING_HEADER
from bff.policy.budgets import BUDGET_HEADERS
from bff.policy.downgrade import DOWNGRADED_HEADER
from bff.policy.experiments import EXPERIMENT_HEADER, VARIANT_HEADER, ExperimentsError
from bff.policy.model import PolicyError
from bff.policy.rate_limits import RATE_LIMIT_HEADERS
from bff.routes import (
    catalog,
    generate,
    health,
    images,
    media,
    ollama,
    openai_compat,
    product_chat,
    provider_budgets,
    usage,
)
from bff.routes import experiments as experiment_routes
from bff.services import Services
from bff.settings import Settings

log = logging.getLogger("bff.app")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 502, 503, 504)
}


async def _shared_state_down(_: Request, exc: Exception) -> Response:
    """Limits and budgets cannot be enforced without the shared Redis: refuse, never skip them."""
    log.warning("Redis unreachable: %s", type(exc).__name__)
    return unavailable("the gateway's shared state (Redis) is unreachable; try again shortly", "shared_state_unavailable").response()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # read from the environment
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.images.start_sweeper()
        # Load the catalog now, so fallback chains that cross the policy are named at start-up;
        # LiteLLM still starting is fine: the first call loads it.
        with contextlib.suppress(ApiError):
            catalog = await services.catalog.get()
            if found := downgrade.problems(services.access.policy, catalog):
                raise PolicyError(f"invalid policy file {settings.policy_file}: " + "; ".join(found))
            if found := experiments.problems(services.experiments, catalog, services.access):
                raise ExperimentsError(f"invalid experiments file {settings.experiments_file}: " + "; ".join(found))
        services.feedback.start()  # Open-WebUI ratings, polled in the background
        yield
        await services.feedback.aclose()
        await services.aclose()

    app = FastAPI(
        title="LLM gateway BFF",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # /docs is served by bff.docs from local Swagger UI files: FastAPI's pages load from a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry layer would cost CPU on every request and add spans
        # of its own; the gateway records exactly one span per request itself.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    install_error_handlers(app)
    app.add_exception_handler(RedisError, _shared_state_down)
    for module in (health, openai_compat, images, catalog, product_chat, generate, usage, provider_budgets, ollama, media, monitoring_pages, experiment_routes):
        app.include_router(module.router)
    app.include_router(openai_compat.root_router)
    docs.install(app)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id", "traceparent", "tracestate"],
            expose_headers=[REQUEST_ID_HEADER, "retry-after", *BUDGET_HEADERS, WARNING_HEADER, *RATE_LIMIT_HEADERS, DOWNGRADED_HEADER, EXPERIMENT_HEADER, VARIANT_HEADER],
        )
    app.add_middleware(RequestContextMiddleware, budgets=services.budgets, limits=services.limits, alerts=services.budget_alerts)
    logging.getLogger("bff").setLevel(settings.log_level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines duplicate the access log
    return app
