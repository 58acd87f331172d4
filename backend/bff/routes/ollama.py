"""Ollama model management: installed and running models for chat users, pull and delete for admins."""

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.responses import Response

from bff.errors import ApiError, bad_request
from bff.pipeline.bodies import JsonBody
from bff.pipeline.operations import ModelsManageCall, ModelsReadCall
from bff.pipeline.stream_relay import PassThroughStream
from bff.services import ServicesDep
from bff.upstream.errors import stream_error_event
from bff.upstream.ollama import MODEL_NAME_RULE, ModelName, PullProgress, is_model_name

router = APIRouter(prefix="/api/ollama", tags=["ollama"])


def _empty_when_null(value: object) -> object:
    return [] if value is None else value


NullableList = BeforeValidator(_empty_when_null)


class ModelDetails(BaseModel):
    family: str | None = None
    parameter_size: str | None = Field(default=None, description="e.g. 8.0B")
    quantization_level: str | None = Field(default=None, description="e.g. Q4_K_M")


class InstalledModel(BaseModel):
    name: str
    size: int = Field(description="bytes on disk")
    digest: str
    modified_at: datetime
    details: ModelDetails = Field(default_factory=ModelDetails)


class InstalledModels(BaseModel):
    models: Annotated[list[InstalledModel], NullableList]


class RunningModel(BaseModel):
    name: str
    size: int = Field(description="bytes in memory")
    size_vram: int = Field(default=0, description="bytes of that in GPU memory")
    expires_at: datetime | None = Field(default=None, description="when Ollama unloads it")


class RunningModels(BaseModel):
    models: Annotated[list[RunningModel], NullableList]


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(description=MODEL_NAME_RULE)


class DeleteResponse(BaseModel):
    model: str
    deleted: bool = True


def _sse(item: PullProgress | ApiError) -> bytes:
    if isinstance(item, ApiError):
        return stream_error_event(item)
    return b"data: " + item.model_dump_json(exclude_none=True).encode() + b"\n\n"


@router.get("/models", response_model=InstalledModels, summary="Models installed on the Ollama server")
async def installed_models(services: ServicesDep, _: ModelsReadCall) -> InstalledModels:
    return await services.ollama.get("/api/tags", InstalledModels)


@router.get("/running", response_model=RunningModels, summary="Models the Ollama server has loaded")
async def running_models(services: ServicesDep, _: ModelsReadCall) -> RunningModels:
    return await services.ollama.get("/api/ps", RunningModels)


@router.post(
    "/pull",
    summary="Pull a model into Ollama, streaming its progress as server-sent events",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Ollama's progress objects, ending with success"}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": PullRequest.model_json_schema()}}}
    },
)
async def pull_model(
    services: ServicesDep, call: ModelsManageCall, body: Annotated[PullRequest, Depends(JsonBody(PullRequest))]
) -> Response:
    call.model, call.stream = body.model, True
    upstream = await services.ollama.open_pull(body.model)  # errors before the first event are plain JSON errors

    async def events() -> AsyncIterator[bytes]:
        async for item in services.ollama.pull_progress(upstream):
            if isinstance(item, ApiError):
                call.error_type = item.code
            yield _sse(item)

    return PassThroughStream(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        background=BackgroundTask(upstream.aclose),
    )


@router.delete("/models/{name:path}", response_model=DeleteResponse, summary="Delete a model from Ollama")
async def delete_model(name: str, request: Request, services: ServicesDep, call: ModelsManageCall) -> DeleteResponse:
    # A `path` parameter stops before a trailing newline, so the received path must end with exactly the name.
    if not is_model_name(name) or not request.scope["path"].endswith("/" + name):
        raise bad_request(f"invalid field 'name': must be {MODEL_NAME_RULE}")
    call.model = name
    await services.ollama.delete(name)
    return DeleteResponse(model=name)
