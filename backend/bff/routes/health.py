"""Liveness and readiness, each dependency reported by name."""

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bff.services import ServicesDep

router = APIRouter(tags=["health"])


class DependencyState(BaseModel):
    status: Literal["ok", "down"]
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    dependencies: dict[str, DependencyState]


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", response_model=Readiness, summary="Readiness: every dependency answers")
async def ready(services: ServicesDep) -> JSONResponse:
    litellm_problem, roles_problem = await asyncio.gather(services.litellm.is_alive(), services.role_source.problem())
    dependencies = {
        "litellm": DependencyState(status="down" if litellm_problem else "ok", detail=litellm_problem),
        services.role_source.name: DependencyState(status="down" if roles_problem else "ok", detail=roles_problem),
    }
    is_ready = all(dep.status == "ok" for dep in dependencies.values())
    body = Readiness(status="ready" if is_ready else "not_ready", dependencies=dependencies)
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503)
