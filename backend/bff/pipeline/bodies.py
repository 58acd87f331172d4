"""Step 2: the request body, read within MAX_REQUEST_BYTES and in time (BODY_RECEIVE_TIMEOUT_SECONDS
for the whole body, BODY_IDLE_TIMEOUT_SECONDS between chunks), and validated into a model.

Routes declare their body as a dependency after their Operation, so a caller is
authenticated before their body is read:

    ChatBody = Annotated[ChatCompletionRequest, Depends(JsonBody(ChatCompletionRequest))]

and document it with `**documented(ChatCompletionRequest)` in the route decorator
(the body is read here, not by FastAPI, so the bound and the error shape hold).
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from bff.errors import ErrorResponse, bad_request, request_timeout, too_large, validation_message
from bff.services import Services
from bff.settings import Settings

ModelT = TypeVar("ModelT", bound=BaseModel)
# Deeper than any real request (tool schemas included), and far below what LiteLLM and the
# providers can re-encode: deeper bodies are refused here instead of failing upstream.
MAX_JSON_DEPTH = 64


class FieldNotAllowed(ValueError):
    """Raised by a body model's validator for a field the gateway refuses outright."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"invalid field '{name}': {reason}")
        self.name = name


@dataclass(frozen=True)
class BodyTimes:
    """How long a body may take: `whole` from its first read, `idle` between two chunks."""

    whole: float
    idle: float

    @classmethod
    def of(cls, settings: Settings) -> "BodyTimes":
        return cls(whole=settings.body_receive_timeout_seconds, idle=settings.body_idle_timeout_seconds)


async def read_bounded(request: Request, limit: int, times: BodyTimes) -> bytes:
    """The whole body, or 413 as soon as it is larger than `limit` (declared or sent), or 408
    when it is sent too slowly (a trickling or stalled client would hold its request forever)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + times.whole
    stream = request.stream()
    while True:
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(min(times.idle, left)):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            if left <= times.idle:
                raise request_timeout(f"the request body was not received within {times.whole:g} seconds") from None
            raise request_timeout(f"no request body data was received for {times.idle:g} seconds") from None
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int, times: BodyTimes) -> dict[str, Any]:
    raw = await read_bounded(request, limit, times)
    try:
        payload = json.loads(raw)
    except RecursionError:
        raise bad_request(f"request body is nested deeper than {MAX_JSON_DEPTH} levels", "invalid_json") from None
    except ValueError:
        raise bad_request("request body is not valid JSON", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("request body must be a JSON object", "invalid_json")
    # Fewer brackets than the limit cannot nest deeper than it: most bodies skip the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth_exceeds(payload, MAX_JSON_DEPTH):
        raise bad_request(f"request body is nested deeper than {MAX_JSON_DEPTH} levels", "invalid_json")
    return payload


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (iterative: no recursion to exhaust)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False


def validate_body(model: type[ModelT], payload: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        cause = exc.errors()[0].get("ctx", {}).get("error")
        if isinstance(cause, FieldNotAllowed):
            raise bad_request(str(cause), "field_not_allowed") from None
        raise bad_request(validation_message(exc)) from None
    except RecursionError:
        raise bad_request("request body is nested too deeply", "invalid_json") from None


async def json_object(request: Request) -> dict[str, Any]:
    """A dependency: the body as a JSON object, for routes whose model depends on its content."""
    services: Services = request.app.state.services
    return await read_json_object(request, services.settings.max_request_bytes, BodyTimes.of(services.settings))


class JsonBody(Generic[ModelT]):
    """A dependency: the route's body as `model`, or 400/408/413 in the gateway's error shape."""

    def __init__(self, model: type[ModelT]):
        self.model = model

    async def __call__(self, request: Request) -> ModelT:
        services: Services = request.app.state.services
        settings = services.settings
        return validate_body(self.model, await read_json_object(request, settings.max_request_bytes, BodyTimes.of(settings)))


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """The schema with its local `$defs` references replaced by their definitions."""
    if isinstance(schema, dict):
        reference = schema.get("$ref", "")
        if reference.startswith("#/$defs/"):
            return _inlined(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


def documented(model: type[BaseModel], responses: dict[int | str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Route decorator arguments that put `model` in the OpenAPI request body (plus `responses`)."""
    schema = model.model_json_schema()
    return {
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inlined(schema, schema.get("$defs", {}))}},
            }
        },
        "responses": {
            400: {"model": ErrorResponse, "description": "invalid JSON or body (the message names the field)"},
            **(responses or {}),
        },
    }
