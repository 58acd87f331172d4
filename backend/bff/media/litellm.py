"""LiteLLM image models (DALL-E, gpt-image, Gemini, ...) as image jobs.

A `workflow` of POST /api/media/image/generate that names no workflow of workflows.yaml
but a LiteLLM model of mode image_generation runs as a job like a workflow's: queued,
running, succeeded or failed, events, images stored as PNGs for their owner. The model is
judged as for chat (authorize_model: 404 unknown, 403 outside the caller's tiers), the
budget at admission (Operation IMAGES). LiteLLM gets what POST /v1/images/generations
would send it through the pipeline: the caller's id as `user`, `n` = batch size, `size` =
WxH, `response_format: b64_json`, and the fallback lists the policy allows the caller.
Only DALL-E takes `response_format`; gpt-image and Gemini always answer b64. LiteLLM
drops it for them with `drop_params: true` (config/litellm.yaml) and refuses it without
(a 400 before any provider call), and then the call is sent once more without it. The job's cost is LiteLLM's `x-litellm-response-cost`; the
served group comes from `x-litellm-model-id` (LiteLLM names no group on image
generation), its provider from the catalog. A non-200 answer fails the job with
upstream/errors.py's mapping; UPSTREAM_TIMEOUT_SECONDS bounds the whole call.

Imported by the routes only: the pipeline modules it uses import bff.services, which
imports media/service.py.
"""

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bff.errors import bad_gateway, bad_request
from bff.identity.principal import Principal
from bff.media.backends import ProgressSink, as_png
from bff.media.jobs import Job
from bff.media.service import ImageService
from bff.media.storage import MAX_IMAGES_PER_JOB
from bff.media.workflows import MIN_SIDE, ImageOptions, ImageParams, ParameterError
from bff.pipeline.accounting import account_answer, decimal_cost, note_served
from bff.pipeline.call import Call
from bff.pipeline.llm_bodies import ImageGenerationRequest
from bff.pipeline.llm_operations import IMAGE_GENERATION, MODE_ROUTES
from bff.policy.access import AccessPolicy
from bff.policy.fallbacks import FallbackPolicy
from bff.policy.models import authorize_model
from bff.telemetry import attributes as attr
from bff.telemetry.tracing import Telemetry
from bff.upstream.catalog import Catalog, ModelEntry
from bff.upstream.errors import error_from_status, error_from_transport
from bff.upstream.litellm import LiteLLMClient, LiteLLMResponse, UpstreamError, UpstreamTimeout

log = logging.getLogger("bff.images")

PROVIDER = "litellm"  # a job's provider when the catalog names none
DEFAULT_SIDE = 1024  # what every OpenAI image model takes; sent when the caller names no size
MAX_SIDE = 4096
MAX_IMAGES = 10  # POST /v1/images/generations' bound on `n` (pipeline/llm_bodies.py)
UNSUPPORTED = ("negative_prompt", "seed", "steps", "checkpoint")  # ComfyUI parameters, no OpenAI field
PROGRESS_STEPS = 1  # one call: 0/1 while it runs, 1/1 when LiteLLM answered


@dataclass(frozen=True)
class LiteLLMImageModel:
    name: str  # as the caller named it (a group or an alias)
    entry: ModelEntry
    catalog: Catalog

    @property
    def provider(self) -> str:
        return self.entry.provider or PROVIDER


def image_model(access: AccessPolicy, catalog: Catalog, principal: Principal, name: str, field: str) -> LiteLLMImageModel | None:
    """The LiteLLM image model `name`, if the catalog has that name; None if it does not.

    Judged exactly as chat judges a model: 403 naming it when the caller's role may not use
    it, and a 400 naming `field` for a model of another mode.
    """
    if catalog.get(name) is None:
        return None
    entry = authorize_model(access, catalog, principal, name)
    if not IMAGE_GENERATION.serves(entry.mode):
        mode = entry.mode or "chat"
        route = MODE_ROUTES.get(mode, "another route")
        raise bad_request(f"invalid field '{field}': '{name}' is a {mode} model, not an image model; call it with {route}", "wrong_model_mode")
    return LiteLLMImageModel(name=name, entry=entry, catalog=catalog)


def resolve_params(model: LiteLLMImageModel, options: ImageOptions) -> ImageParams:
    """The job's parameters: what OpenAI's image API can say (prompt, size, n); ParameterError otherwise."""
    for name in UNSUPPORTED:
        if getattr(options, name) is not None:
            raise ParameterError(name, f"LiteLLM image model '{model.name}' does not take '{name}'")
    if (options.width is None) != (options.height is None):
        missing = "height" if options.height is None else "width"
        raise ParameterError(missing, f"give width and height together (LiteLLM takes one size), or neither for {DEFAULT_SIDE}x{DEFAULT_SIDE}")
    width, height = options.width or DEFAULT_SIDE, options.height or DEFAULT_SIDE
    for name, value in (("width", width), ("height", height)):
        if value > MAX_SIDE:
            raise ParameterError(name, f"must be between {MIN_SIDE} and {MAX_SIDE} for a LiteLLM image model")
    batch = options.batch_size or 1
    if batch > MAX_IMAGES:
        raise ParameterError("batch_size", f"must be between 1 and {MAX_IMAGES} for a LiteLLM image model")
    return ImageParams(
        prompt=options.prompt, negative_prompt=None, seed=None, steps=None, width=width, height=height,
        batch_size=batch, checkpoint=None,
    )


def _refuses_response_format(content: bytes) -> bool:
    """LiteLLM's UnsupportedParamsError for `response_format` (1.106: "Setting `response_format` is not supported by ...")."""
    return b"`response_format`" in content and b"not supported" in content


def _image_bytes(item: Any) -> bytes:
    """One `data` item's image: `b64_json`, or a `data:` URL (LiteLLM's mock answers); never a fetched link."""
    if not isinstance(item, dict):
        raise bad_gateway("the image model answered with something that is not an image")
    encoded, url = item.get("b64_json"), item.get("url")
    if not encoded and isinstance(url, str) and url.startswith("data:"):
        head, _, data = url.partition(",")
        encoded = data if head.endswith(";base64") else None
    if not isinstance(encoded, str) or not encoded:
        raise bad_gateway("the image model answered with a link instead of image data (b64_json)")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise bad_gateway("the image model answered with invalid base64 image data") from None


def decode_images(answer: dict[str, Any]) -> list[bytes]:
    """PNG bytes of every image in an OpenAI images answer (others converted, garbage refused)."""
    data = answer.get("data")
    if not isinstance(data, list) or not data:
        raise bad_gateway("the image model answered without images")
    return [as_png(_image_bytes(item)) for item in data[:MAX_IMAGES_PER_JOB]]


class LiteLLMImageRun:
    """One POST /v1/images/generations to LiteLLM, on the job's task; accounts on the request's call."""

    def __init__(
        self,
        client: LiteLLMClient,
        fallbacks: FallbackPolicy,
        model: LiteLLMImageModel,
        params: ImageParams,
        call: Call,
        timeout_seconds: float,
    ):
        self._client = client
        self._fallbacks = fallbacks
        self._model = model
        self._params = params
        self._call = call
        self._timeout_seconds = timeout_seconds
        self._cost: Decimal | None = None

    @property
    def timeout_seconds(self) -> float:
        return self._timeout_seconds

    def body(self) -> dict[str, Any]:
        """What LiteLLM receives: the validated OpenAI body, `user` and the caller's fallback lists."""
        principal = self._call.caller
        assert principal.user_id is not None  # the images permission needs a user
        request = ImageGenerationRequest(
            model=self._model.name,
            prompt=self._params.prompt,
            n=self._params.batch_size,
            size=self._params.size,
            response_format="b64_json",
        )
        controls = self._fallbacks.request_controls(principal, self._model.entry, self._model.catalog)
        return request.upstream(principal.user_id, controls)

    async def images(self, sink: ProgressSink) -> list[bytes]:
        call = self._call
        body = self.body()
        await sink.running()
        upstream = await self._post(body)
        if upstream.status_code == 400 and _refuses_response_format(upstream.content):
            # A deployment without drop_params whose model always answers b64 (gpt-image, Gemini):
            # LiteLLM refused the field before calling the provider, so nothing was spent.
            body.pop("response_format", None)
            upstream = await self._post(body)
        if upstream.status_code != 200:
            raise error_from_status(upstream.status_code, upstream.content, upstream.headers)
        note_served(call, upstream.headers, self._model.catalog)  # group from x-litellm-model-id, provider
        self._check_served()
        try:
            answer = upstream.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._cost = call.cost_usd = decimal_cost(upstream.headers.get("x-litellm-response-cost"))  # spent anyway
            raise bad_gateway()
        account_answer(call, answer, upstream.headers)  # tokens the provider reports, LiteLLM's cost
        self._cost = call.cost_usd
        images = await asyncio.to_thread(decode_images, answer)
        await sink.progress(PROGRESS_STEPS, PROGRESS_STEPS)
        return images

    async def _post(self, body: dict[str, Any]) -> LiteLLMResponse:
        call = self._call
        headers = {"content-type": "application/json", "x-request-id": call.request_id, **Telemetry.traceparent(call.span)}
        try:
            return await self._client.post(IMAGE_GENERATION.path, json.dumps(body, separators=(",", ":")).encode(), headers)
        except UpstreamTimeout:
            raise TimeoutError from None  # the job's own timeout: timed_out, like a ComfyUI prompt
        except UpstreamError as exc:
            raise error_from_transport(exc) from None

    def _check_served(self) -> None:
        """LiteLLM ignoring the fallback lists would be a bug in the gateway's assumptions: alarmed loudly."""
        call, catalog = self._call, self._model.catalog
        if self._fallbacks.served_outside(call.caller, call.model_group or "", catalog):
            call.extra_attributes[attr.SERVED_OUTSIDE_POLICY] = "true"
            log.error(
                "POLICY VIOLATION: request %s of user %s (role %s) asked for %s and was served by %s",
                call.request_id, call.caller.user_id, call.caller.role, call.model, call.model_group,
            )

    async def stop(self) -> None:
        return None  # the request is cancelled with the task; a provider cannot be told to stop

    async def close(self) -> None:
        return None

    def cost(self, images: int) -> Decimal | None:
        return self._cost

    def timeout_message(self) -> str:
        return f"no image from '{self._model.name}' within {self._timeout_seconds:g} s"


async def start_job(
    images: ImageService,
    call: Call,
    model: LiteLLMImageModel,
    params: ImageParams,
    client: LiteLLMClient,
    fallbacks: FallbackPolicy,
    timeout_seconds: float,
    detach_span: bool = True,
) -> Job:
    """Opens the job (429 beyond the user's limit) and runs it; the span ends with the job."""
    call.model, call.model_group, call.provider = model.name, model.entry.group, model.provider
    call.extra_attributes.update({attr.IMAGES_COUNT: params.batch_size, attr.IMAGES_SIZE: params.size})
    run = LiteLLMImageRun(client, fallbacks, model, params, call, timeout_seconds)
    return await images.start_run(call, model.name, model.provider, PROGRESS_STEPS, run, detach_span)
