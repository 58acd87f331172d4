"""POST /v1/images/generations: OpenAI-compatible, for Open-WebUI's `openai` image engine and the SDKs.

`model` names a workflow; the answer comes once the job has finished.
"""

import asyncio
import base64
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from bff.errors import bad_request
from bff.media.workflows import MAX_PROMPT_CHARS, MIN_SIDE, ImageOptions
from bff.pipeline import gateway
from bff.pipeline import llm_operations as llm
from bff.pipeline.bodies import documented, json_object, validate_body
from bff.pipeline.llm_bodies import ImageGenerationRequest as LiteLLMImageRequest
from bff.pipeline.operations import ImagesCall
from bff.routes.media import image_url, resolve_params
from bff.services import ServicesDep

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
OPENAI_FIELDS = {"width": "size", "height": "size", "batch_size": "n"}


class ImageGenerationRequest(BaseModel):
    # Other OpenAI fields (quality, style, user, background, ...) do not apply to a workflow.
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, min_length=1, max_length=64, description="a workflow name; default: the first one")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1)
    size: str | None = Field(default=None, max_length=16, description="WIDTHxHEIGHT within the workflow's limits, or 'auto'")
    response_format: Literal["url", "b64_json"] = "url"


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size == "auto":
        return None, None
    match = _SIZE.match(size)
    if match is None:
        raise bad_request("invalid field 'size': expected WIDTHxHEIGHT, e.g. 1024x1024")
    width, height = int(match[1]), int(match[2])
    if width < MIN_SIDE or height < MIN_SIDE:
        raise bad_request(f"invalid field 'size': width and height must be at least {MIN_SIDE}")
    return width, height


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    summary="Generate images (OpenAI-compatible); `model` names a ComfyUI workflow or a LiteLLM image model",
    **documented(ImageGenerationRequest),
)
async def generate_images(
    request: Request, services: ServicesDep, call: ImagesCall, payload: Annotated[dict[str, Any], Depends(json_object)]
) -> Response:
    model = payload.get("model")
    if isinstance(model, str) and services.images.catalog.get(model) is None:
        # Not a workflow: a LiteLLM image model (DALL-E, gpt-image, Gemini), through the same pipeline as chat
        litellm_body = validate_body(LiteLLMImageRequest, payload)
        served = await gateway.forward(services, call, request, llm.IMAGE_GENERATION, litellm_body)
        return served.response() if isinstance(served, gateway.Answer) else served
    body = validate_body(ImageGenerationRequest, payload)
    workflow = services.images.workflow(body.model)
    width, height = _size(body.size)
    params = resolve_params(workflow, ImageOptions(prompt=body.prompt, width=width, height=height, batch_size=body.n), OPENAI_FIELDS)
    job = await services.images.start(call, workflow, params, detach_span=False)
    await job.done.wait()
    if job.error is not None:
        raise job.error.api_error()
    if body.response_format == "url":
        data = [ImageData(url=image_url(request, job.id, index)) for index in range(job.images)]
    else:
        data = []
        for index in range(job.images):
            path = services.images.store.image_path(job.id, index)
            assert path is not None
            data.append(ImageData(b64_json=base64.b64encode(await asyncio.to_thread(path.read_bytes)).decode()))
    answer = ImagesResponse(created=int(time.time()), data=data)
    return JSONResponse(answer.model_dump(exclude_none=True))
