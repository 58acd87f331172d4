"""Step 2 for multipart operations (speech to text, image edits): a bounded form, its fields
validated into a model and its files kept aside, to be sent on exactly as validated.

The limit is MAX_UPLOAD_BYTES (OpenAI's is 25 MB for audio), larger than MAX_REQUEST_BYTES
for JSON: uploads are files. Beyond it: 413; sent too slowly (the body's time bounds): 408.
"""

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.types import Message

from bff.errors import ErrorResponse, bad_request
from bff.pipeline.bodies import BodyTimes, read_bounded, validate_body
from bff.services import Services

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_PARTS = 64

FileField = tuple[str, tuple[str, bytes, str]]  # (field, (filename, content, content type)), as httpx takes files


@dataclass
class Upload:
    files: list[FileField] = field(default_factory=list)


class FormBody(Generic[ModelT]):
    """A dependency: (the form's fields as `model`, its files), or 400/408/413 in the error shape.

    `files` names the file fields the operation takes (`image[]` collects into `image`);
    lists are sent as repeated fields (`timestamp_granularities[]`).
    """

    def __init__(self, model: type[ModelT], files: tuple[str, ...], required: str):
        self.model = model
        self.file_fields = files
        self.required = required

    async def __call__(self, request: Request) -> tuple[ModelT, Upload]:
        services: Services = request.app.state.services
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad_request("request body must be multipart/form-data", "invalid_form")
        raw = await read_bounded(request, services.settings.max_upload_bytes, BodyTimes.of(services.settings))
        form = await _replayed(request, raw).form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
        fields: dict[str, Any] = {}
        upload = Upload()
        for name, value in form.multi_items():
            key = name.removesuffix("[]")
            if isinstance(value, UploadFile):
                if key not in self.file_fields:
                    raise bad_request(f"invalid field '{name}': not a file field of this operation", "invalid_form")
                content = await value.read()
                upload.files.append((name, (value.filename or key, content, value.content_type or "application/octet-stream")))
            elif name.endswith("[]"):
                fields.setdefault(key, []).append(value)
            else:
                fields[key] = value
        if not any(name.removesuffix("[]") == self.required for name, _ in upload.files):
            raise bad_request(f"invalid field '{self.required}': a file is required", "invalid_form")
        return validate_body(self.model, fields), upload


def documented_form(model: type[BaseModel], files: tuple[str, ...]) -> dict[str, Any]:
    """Route decorator arguments that put the form (its fields and file parts) in the OpenAPI request body."""
    schema = model.model_json_schema()
    properties = {**schema.get("properties", {}), **{name: {"type": "string", "format": "binary"} for name in files}}
    form = {"type": "object", "properties": properties, "required": [*schema.get("required", []), files[0]]}
    return {
        "openapi_extra": {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}},
        "responses": {
            400: {"model": ErrorResponse, "description": "invalid form (the message names the field)"},
            413: {"model": ErrorResponse, "description": "larger than MAX_UPLOAD_BYTES"},
        },
    }


def _replayed(request: Request, body: bytes) -> Request:
    """The request again, its body already read (Starlette parses forms from the ASGI stream)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
