"""Liveness and readiness, each dependency reported by name."""

import asyncio
from typing import Literal

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bff import shared_state
from bff.services import ServicesDep

router = APIRouter(tags=["health"])


class DependencyState(BaseModel):
    status: Literal["ok", "down"]
    detail: str | None = None


class SpanExport(BaseModel):
    pending: int = Field(description="spans waiting for ClickHouse")
    dropped: int = Field(description="spans lost because the buffer was full")
    last_error: str | None


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="not_ready: chat cannot work (LiteLLM or the role source is down); "
        "degraded: chat works but usage data is delayed (ClickHouse or the OTEL collector is down)"
    )
    dependencies: dict[str, DependencyState]
    spans: SpanExport | None = Field(description="the ClickHouse span exporter (absent when exporting over OTLP)")


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", response_model=Readiness, summary="Readiness: every dependency answers")
async def ready(services: ServicesDep) -> JSONResponse:
    collector_url = services.settings.otel_collector_health_url
    litellm_problem, roles_problem, store_problem, collector_problem, redis_problem = await asyncio.gather(
        services.litellm_probe.problem(),
        services.role_source.problem(),
        services.store.problem(),
        _collector_problem(collector_url),
        shared_state.problem(services.redis),
    )
    dependencies = {
        "litellm": _state(litellm_problem),
        services.role_source.name: _state(roles_problem),
        "clickhouse": _state(store_problem),
    }
    if collector_url:
        dependencies["otel_collector"] = _state(collector_problem)
    if services.redis is not None:
        dependencies["redis"] = _state(redis_problem)  # without it no paid call can be limited: refused
    export = services.telemetry.export_state()
    if litellm_problem or roles_problem or redis_problem:
        status = "not_ready"
    elif store_problem or collector_problem or (export is not None and export.last_error):
        status = "degraded"
    else:
        status = "ready"
    body = Readiness(
        status=status,
        dependencies=dependencies,
        spans=SpanExport.model_validate(export.model_dump()) if export else None,
    )
    return JSONResponse(body.model_dump(), status_code=503 if status == "not_ready" else 200)


def _state(problem: str | None) -> DependencyState:
    return DependencyState(status="down" if problem else "ok", detail=problem)


async def _collector_problem(url: str | None) -> str | None:
    """The collector's health_check extension (its image has no shell, so compose cannot probe it)."""
    if not url:
        return None
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            answer = await client.get(url)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return None if answer.status_code == 200 else f"answered {answer.status_code}"
