"""One error shape everywhere, OpenAI style: {"error": {"message", "type", "code"}}."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("bff.errors")


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """An error the client should see; the message must be safe to show."""

    def __init__(self, status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.type, code=self.code))

    def response(self) -> JSONResponse:
        return JSONResponse(self.body().model_dump(), status_code=self.status, headers=self.headers)


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code)


def unauthorized(message: str, code: str = "invalid_credentials") -> ApiError:
    return ApiError(401, message, "authentication_error", code, {"WWW-Authenticate": "Bearer"})


def forbidden(message: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, message, "permission_error", code)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, message, "not_found_error", code)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds the limit of {limit} bytes", "invalid_request_error", "request_too_large")


def request_timeout(message: str) -> ApiError:
    """The client sent its body too slowly; the connection is closed (the rest of the body is not awaited)."""
    return ApiError(408, message, "invalid_request_error", "request_timeout", {"Connection": "close"})


def headers_too_large(limit: int) -> ApiError:
    return ApiError(
        431, f"request line and headers exceed the limit of {limit} bytes", "invalid_request_error", "request_headers_too_large"
    )


def rate_limited(message: str, retry_after: str | None = None, code: str = "rate_limit_exceeded") -> ApiError:
    headers = {"Retry-After": retry_after} if retry_after else None
    return ApiError(429, message, "rate_limit_error", code, headers)


def bad_gateway(message: str = "the upstream model service returned an invalid answer") -> ApiError:
    return ApiError(502, message, "upstream_error", "bad_gateway")


def unavailable(message: str, code: str = "service_unavailable") -> ApiError:
    return ApiError(503, message, "service_unavailable", code)


def client_closed() -> ApiError:
    """What the span records for a client that left before the answer (nginx's 499); nobody reads it."""
    return ApiError(499, "the client closed the request", "client_disconnected", "client_disconnected")


def gateway_timeout(message: str = "the upstream model service timed out") -> ApiError:
    return ApiError(504, message, "timeout_error", "upstream_timeout")


def validation_message(exc: ValidationError | RequestValidationError) -> str:
    """Names the first offending field, without echoing the submitted value."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"invalid field '{location}': {first.get('msg', 'invalid value')}"


_STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_credentials"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
}


def _note_error(request: Request, code: str) -> None:
    """The error code lands in the request's span and access-log line."""
    call = getattr(request.state, "call", None)
    if call is not None:
        call.error_type = code


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        _note_error(request, exc.code)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = bad_request(validation_message(exc))
        _note_error(request, error.code)
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_, code = _STATUS_TYPES.get(exc.status_code, ("invalid_request_error", str(exc.status_code)))
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return ApiError(exc.status_code, message, type_, code, dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        _note_error(request, "internal_error")
        return ApiError(500, "internal error", "internal_error", "internal_error").response()
