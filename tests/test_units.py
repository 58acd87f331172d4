"""Small pure functions of the chat path and error mapping."""

import json

import httpx
from starlette.datastructures import Headers

from bff.errors import ApiError
from bff.pipeline.call import Call
from bff.pipeline.gateway import _upstream_headers
from bff.pipeline.llm_bodies import ChatCompletionRequest
from bff.pipeline.stream_meter import ChatMeter as StreamMeter
from bff.upstream.errors import error_from_status


def test_only_trace_headers_travel_to_litellm() -> None:
    headers = _upstream_headers(
        Headers(
            {
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "tracestate": "vendor=1",
                "x-litellm-customer-id": "someone",
                "x-litellm-end-user-id": "someone",
                "authorization": "Bearer user-token",
                "cookie": "token=abc",
            }
        ),
        Call(request_id="req-1"),
    )
    assert headers == {
        "content-type": "application/json",
        "x-request-id": "req-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=1",
    }


def test_upstream_body_sets_user_and_usage_for_streams() -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user"}], "user": "evil", "safety_identifier": "evil", "stream": True,
         "stream_options": {"x": 1}, "top_k": 3}
    )
    sent = body.upstream("u-1", {"fallbacks": []})
    assert sent["user"] == "u-1" and sent["safety_identifier"] == "u-1"
    assert sent["stream_options"] == {"x": 1, "include_usage": True}
    assert sent["top_k"] == 3 and sent["fallbacks"] == []  # provider parameters pass, the gateway's controls last


def test_the_meter_reads_usage_finish_and_content_across_split_chunks() -> None:
    meter = StreamMeter()
    first = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\ndata: {"choices":[{"index":0,"de'
    assert meter.feed(first) == [b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n']  # the partial event waits
    rest = b'lta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
    assert meter.feed(rest) == [b'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n']
    assert meter.finished and meter.usage is None and meter.delivered_text() == "Hello"
    last = meter.feed(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"cost":1e-05}}\n\ndata: [DONE]\n\n')
    assert len(last) == 2 and last[1] == b"data: [DONE]\n\n" and meter.done  # one event per write
    assert meter.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": 1e-05}


def test_the_meter_rewrites_litellm_error_events() -> None:
    meter = StreamMeter()
    raw = b'data: {"error": {"message": "litellm.APIConnectionError: OpenAIException - boom at http://10.0.0.1", "type": null, "param": null, "code": "500"}}\n\n'
    [sent] = meter.feed(raw)
    error = json.loads(sent.removeprefix(b"data: "))["error"]
    assert error == {"message": "the model provider failed while answering", "type": "upstream_error", "code": "bad_gateway"}
    assert meter.error is not None and meter.error.status == 502


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
    # LiteLLM passes the provider's Retry-After on under its own name
    provider = error_from_status(429, b"{}", httpx.Headers({"llm_provider-retry-after": "7"}))
    assert provider.headers == {"Retry-After": "7"}
