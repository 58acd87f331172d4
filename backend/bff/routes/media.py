"""The product's image routes: start a job, follow it (JSON or server-sent events), fetch its images.

Jobs and images are visible only to their owner or an admin; anyone else gets 404, so
job ids do not reveal whether a job exists. Ids are checked by pattern before any lookup.
"""

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, model_validator

from bff.errors import bad_request, not_found
from bff.identity.principal import Principal
from bff.media.jobs import Job, JobError, JobEvent, JobState, JobStatus, Progress
from bff.media.storage import JOB_ID_PATTERN, MAX_IMAGES_PER_JOB
from bff.media.workflows import ImageOptions, ImageParams, ParameterError, Workflow
from bff.policy.model import Permission
from bff.policy.routing import TASK_NAME
from bff.request_context import RequestRecord
from bff.routes.body import read_json_object, validate_body
from bff.services import PrincipalDep, RecordDep, Services, ServicesDep
from bff.upstream.chat import PassThroughStream

router = APIRouter(prefix="/api/media", tags=["media"])

JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, max_length=32, description="32 hex characters")]
ImageIndex = Annotated[int, Path(ge=0, lt=MAX_IMAGES_PER_JOB)]


class GenerateImageRequest(ImageOptions):
    workflow: str | None = Field(
        default=None, min_length=1, max_length=64, description="a workflow name from config/comfyui/workflows.yaml"
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
    progress: Progress = Field(description="sampler steps done / total, from ComfyUI's progress messages")
    error: JobError | None
    images: list[str] = Field(description="absolute URLs of the PNGs, once the job succeeded")
    created_at: datetime
    finished_at: datetime | None


def require_images(services: Services, principal: Principal, record: RequestRecord, paid: bool = False) -> None:
    services.access.require(principal, Permission.images)
    if paid:
        services.budgets.enforce(record.budget)


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


@router.post("/image/generate", status_code=202, response_model=JobAccepted, summary="Start an image job")
async def generate_image(request: Request, services: ServicesDep, principal: PrincipalDep, record: RecordDep) -> JSONResponse:
    require_images(services, principal, record, paid=True)
    body = validate_body(GenerateImageRequest, await read_json_object(request, services.settings.max_request_bytes))
    workflow = services.images.workflow(body.workflow or services.router.workflow_for(body.task or ""))
    params = resolve_params(workflow, body)
    record.context = body.task
    job = await services.images.start(principal, record, workflow, params, detach_span=True)
    return JSONResponse(JobAccepted(job_id=job.id, status=job.status).model_dump(mode="json"), status_code=202)


@router.get("/jobs/{job_id}", response_model=JobView, summary="An image job's status, progress and image URLs")
async def get_job(job_id: JobId, request: Request, services: ServicesDep, principal: PrincipalDep, record: RecordDep) -> JobView:
    require_images(services, principal, record)
    return job_view(request, services.images.registry.visible(job_id, principal).state())


def _sse(request: Request, event: JobEvent) -> bytes:
    data = json.dumps(job_view(request, event.state).model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    summary="An image job's state changes and progress as server-sent events, ending with an `end` event",
    response_class=PassThroughStream,
)
async def job_events(
    job_id: JobId, request: Request, services: ServicesDep, principal: PrincipalDep, record: RecordDep
) -> PassThroughStream:
    require_images(services, principal, record)
    job: Job = services.images.registry.visible(job_id, principal)

    async def events() -> AsyncIterator[bytes]:
        async for event in services.images.registry.listen(job):
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
async def get_image(
    job_id: JobId, index: ImageIndex, services: ServicesDep, principal: PrincipalDep, record: RecordDep
) -> FileResponse:
    require_images(services, principal, record)
    job = services.images.registry.visible(job_id, principal)
    path = services.images.store.image_path(job.id, index) if index < job.images else None
    if path is None:
        raise not_found("no such image", "image_not_found")
    return FileResponse(
        path,
        media_type="image/png",
        headers={"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"},
    )
