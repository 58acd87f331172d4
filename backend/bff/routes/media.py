"""The product's image routes: start a job, follow it (JSON or server-sent events), fetch its images.

A job runs a workflow of config/comfyui/workflows.yaml or, for any other name, a LiteLLM
image model of the catalog (media/litellm.py), as POST /v1/images/generations resolves
`model`. Jobs and images are visible only to their owner or an admin; anyone else gets
404, so job ids do not reveal whether a job exists. Ids are checked by pattern before any lookup.
"""

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, model_validator

from bff.errors import bad_request, not_found
from bff.media import litellm
from bff.media.jobs import JobError, JobEvent, JobState, JobStatus, Progress
from bff.media.storage import JOB_ID_PATTERN, MAX_IMAGES_PER_JOB
from bff.media.workflows import ImageOptions, ImageParams, ParameterError, Workflow
from bff.pipeline.bodies import JsonBody, documented
from bff.pipeline.operations import ImageJobsCall, ImagesCall
from bff.pipeline.stream_relay import PassThroughStream
from bff.policy.routing import TASK_NAME
from bff.services import ServicesDep

router = APIRouter(prefix="/api/media", tags=["media"])

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, max_length=32, description="32 hex characters")]
ImageIndex = Annotated[int, Path(ge=0, lt=MAX_IMAGES_PER_JOB)]


class GenerateImageRequest(ImageOptions):
    workflow: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="a workflow name from config/comfyui/workflows.yaml, or a LiteLLM image model (mode image_generation)",
    )
    task: str | None = Field(
        default=None, pattern=TASK_NAME.pattern, description="or an image task, resolved by config/routing.yaml"
    )

    @model_validator(mode="after")
    def _workflow_or_task(self) -> "GenerateImageRequest":
        if self.workflow is not None and self.task is not None:
            raise ValueError("send 'workflow' or 'task', not both")
        return self


class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus


class JobView(BaseModel):
    job_id: str
    workflow: str
    status: JobStatus
    progress: Progress = Field(
        description="sampler steps done / total, from ComfyUI's progress messages; 0/1 then 1/1 for a LiteLLM image model"
    )
    error: JobError | None
    images: list[str] = Field(description="absolute URLs of the PNGs, once the job succeeded")
    created_at: datetime
    finished_at: datetime | None


def image_url(request: Request, job_id: str, index: int) -> str:
    return f"{str(request.base_url).rstrip('/')}{router.prefix}/images/{job_id}/{index}"


def job_view(request: Request, state: JobState) -> JobView:
    urls = [image_url(request, state.job_id, i) for i in range(state.images)] if state.status is JobStatus.succeeded else []
    return JobView(**state.model_dump(exclude={"images"}), images=urls)


def resolve_params(workflow: Workflow, options: ImageOptions, field_names: dict[str, str] | None = None) -> ImageParams:
    """The job's parameters; a parameter the workflow cannot take is a 400 naming the caller's field."""
    try:
        return workflow.resolve(options)
    except ParameterError as exc:
        field = (field_names or {}).get(exc.field, exc.field)
        raise bad_request(f"invalid field '{field}': {exc.message}") from None


def resolve_model_params(model: litellm.LiteLLMImageModel, options: ImageOptions) -> ImageParams:
    try:
        return litellm.resolve_params(model, options)
    except ParameterError as exc:
        raise bad_request(f"invalid field '{exc.field}': {exc.message}") from None


@router.post(
    "/image/generate",
    status_code=202,
    response_model=JobAccepted,
    summary="Start an image job",
    **documented(GenerateImageRequest),
)
async def generate_image(
    services: ServicesDep,
    call: ImagesCall,
    body: Annotated[GenerateImageRequest, Depends(JsonBody(GenerateImageRequest))],
) -> JSONResponse:
    name = body.workflow or services.router.workflow_for(body.task or "")
    call.context = body.task
    if services.images.catalog.get(name) is not None:
        workflow = services.images.workflow(name)
        job = await services.images.start(call, workflow, resolve_params(workflow, body), detach_span=True)
    else:
        # Not a workflow: a LiteLLM image model (DALL-E, gpt-image, Gemini) under the chat policy
        call.model = name  # refusals name it on the span too
        catalog = await services.catalog.get()
        model = litellm.image_model(services.access, catalog, call.caller, name, "workflow" if body.workflow else "task")
        if model is None:
            raise not_found(f"no image workflow or LiteLLM image model '{name}'"[:200], "model_not_found")
        params = resolve_model_params(model, body)
        job = await litellm.start_job(
            services.images, call, model, params, services.litellm, services.fallbacks, services.settings.upstream_timeout_seconds
        )
    return JSONResponse(JobAccepted(job_id=job.id, status=job.status).model_dump(mode="json"), status_code=202)


@router.get("/jobs/{job_id}", response_model=JobView, summary="An image job's status, progress and image URLs")
async def get_job(job_id: JobId, request: Request, services: ServicesDep, call: ImageJobsCall) -> JobView:
    return job_view(request, await services.images.registry.visible(job_id, call.caller))


def _sse(request: Request, event: JobEvent) -> bytes:
    data = json.dumps(job_view(request, event.state).model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    summary="An image job's state changes and progress as server-sent events, ending with an `end` event",
    response_class=PassThroughStream,
)
async def job_events(job_id: JobId, request: Request, services: ServicesDep, call: ImageJobsCall) -> PassThroughStream:
    state = await services.images.registry.visible(job_id, call.caller)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        async for event in services.images.registry.listen(job_id, state):
            yield _sse(request, event)

    return PassThroughStream(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


@router.get(
    "/images/{job_id}/{index}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
    summary="A finished image (PNG)",
)
async def get_image(job_id: JobId, index: ImageIndex, services: ServicesDep, call: ImageJobsCall) -> FileResponse:
    # Any replica serves it: the file's name is the job id, in MEDIA_DIR that replicas share.
    state = await services.images.registry.visible(job_id, call.caller)
    path = services.images.store.image_path(state.job_id, index) if index < state.images else None
    if path is None:
        raise not_found("no such image", "image_not_found")
    return FileResponse(
        path,
        media_type="image/png",
        headers={"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"},
    )
