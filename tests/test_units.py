"""Small pure functions of the chat path and error mapping."""

import httpx
from starlette.requests import Request

from bff.errors import ApiError
from bff.identity.principal import AuthMethod, Principal, Role
from bff.request_context import RequestRecord
from bff.upstream.chat import upstream_body, upstream_headers, usage_from_stream_tail
from bff.upstream.errors import error_from_status


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def test_only_trace_headers_travel_to_litellm() -> None:
    headers = upstream_headers(
        _request(
            {
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "tracestate": "vendor=1",
                "x-litellm-customer-id": "someone",
                "x-litellm-end-user-id": "someone",
                "authorization": "Bearer user-token",
                "cookie": "token=abc",
            }
        ),
        RequestRecord(request_id="req-1"),
    )
    assert headers == {
        "content-type": "application/json",
        "x-request-id": "req-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=1",
    }


def test_upstream_body_sets_user_and_usage_for_streams() -> None:
    principal = Principal(user_id="u-1", role=Role.user, auth=AuthMethod.session_token)
    body = upstream_body({"model": "m", "messages": [], "user": "evil", "stream_options": {"x": 1}}, principal, True)
    assert b'"user":"u-1"' in body
    assert b'"stream_options":{"x":1,"include_usage":true}' in body


def test_usage_is_read_from_the_stream_tail() -> None:
    tail = b'data: {"choices":[]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\ndata: [DONE]\n\n'
    assert usage_from_stream_tail(tail) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert usage_from_stream_tail(b"data: [DONE]\n\n") is None


def test_upstream_messages_are_scrubbed() -> None:
    body = (
        b'{"error":{"message":"litellm.BadRequestError: OpenAIException - max_tokens too large for '
        b'https://api.internal:8443/v1 with key sk-live-abcdefgh12345\\n\\nLiteLLM: model group x failed"}}'
    )
    error = error_from_status(400, body, httpx.Headers())
    assert isinstance(error, ApiError) and error.status == 400
    assert error.message.startswith("max_tokens too large")
    assert "https://" not in error.message and "sk-live" not in error.message and "LiteLLM" not in error.message
    assert error_from_status(503, b"oops", httpx.Headers()).status == 502
    limited = error_from_status(429, b"{}", httpx.Headers({"retry-after": "12"}))
    assert limited.status == 429 and limited.headers == {"Retry-After": "12"}
