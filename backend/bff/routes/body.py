"""Reads a bounded JSON object body and validates it into a pydantic model."""

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from bff.errors import bad_request, too_large, validation_message

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    try:
        payload = json.loads(b"".join(chunks))
    except ValueError:
        raise bad_request("request body is not valid JSON", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("request body must be a JSON object", "invalid_json")
    return payload


def validate_body(model: type[ModelT], payload: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise bad_request(validation_message(exc)) from None
