"""A loopback OpenAI-compatible provider whose behaviour the tests control.

LiteLLM deployments point at it (`api_base`); the upstream model name picks the
behaviour, so one server plays every provider scenario:

    anything else     normal reply (or a stream of 3 quick chunks); use an OpenAI
                      catalog name such as gpt-4o-mini so LiteLLM forwards `user`
    fake-slow-stream  5 content chunks, STREAM_GAP_SECONDS apart
    fake-long-stream  a chunk every 50 ms for 30 s (for disconnect tests)
    fake-429          429 with Retry-After: 7
    fake-500          500
    fake-hang         never answers within a test's patience
    fake-usage-late   a normal stream whose usage event (and [DONE]) follows the finish_reason
                      chunk only after USAGE_DELAY_SECONDS
    fake-drop-stream  a stream that drops the TCP connection after DROP_AFTER_CHUNKS content chunks
    fake-context-window  400 "maximum context length" (LiteLLM: ContextWindowExceededError)
    fake-content-policy  400 content_policy_violation (LiteLLM: ContentPolicyViolationError)
"""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = "Hello from the fake provider."
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
STREAM_GAP_SECONDS = 0.3
SLOW_STREAM_CHUNKS = 5
LONG_STREAM_SECONDS = 30.0
USAGE_DELAY_SECONDS = 1.0
DROP_AFTER_CHUNKS = 2


@dataclass
class StreamRecord:
    model: str
    chunks_sent: int = 0
    finished: bool = False  # sent everything
    closed_early_at: float | None = None  # the reader went away first
    dropped: bool = False  # the provider itself broke the connection off (fake-drop-stream)
    finish_sent_at: float | None = None  # when the finish_reason chunk went out


@dataclass
class FakeProviderState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    streams: list[StreamRecord] = field(default_factory=list)

    def bodies_for(self, model: str) -> list[dict[str, Any]]:
        return [body for body in self.requests if body.get("model") == model]


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _usage_chunk(model: str) -> bytes:
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


class DroppedConnection(Exception):
    """Raised inside a stream: uvicorn then closes the connection without ending the chunked body."""


def create_fake_provider(state: FakeProviderState) -> Starlette:
    async def stream(model: str, pieces: list[str], gap: float, record: StreamRecord):  # type: ignore[no-untyped-def]
        try:
            yield _chunk(model, {"role": "assistant", "content": ""})
            for piece in pieces:
                if gap:
                    await asyncio.sleep(gap)
                if model == "fake-drop-stream" and record.chunks_sent == DROP_AFTER_CHUNKS:
                    record.dropped = True
                    raise DroppedConnection(model)
                yield _chunk(model, {"content": piece})
                record.chunks_sent += 1
            yield _chunk(model, {}, "stop")
            record.finish_sent_at = time.monotonic()
            if model == "fake-usage-late":
                await asyncio.sleep(USAGE_DELAY_SECONDS)
            yield _usage_chunk(model)
            yield b"data: [DONE]\n\n"
            record.finished = True
        finally:
            if not record.finished and not record.dropped:
                record.closed_early_at = time.monotonic()

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        model = str(body.get("model", ""))
        if model == "fake-429":
            return JSONResponse(
                {"error": {"message": "Rate limit reached for requests", "type": "rate_limit_error"}},
                status_code=429,
                headers={"retry-after": "7"},
            )
        if model == "fake-500":
            return JSONResponse({"error": {"message": "internal provider failure", "type": "server_error"}}, 500)
        if model == "fake-hang":
            await asyncio.sleep(120)
        if model == "fake-context-window":
            message = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens."
            error = {"message": message, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
            return JSONResponse({"error": error}, 400)
        if model == "fake-content-policy":
            message = "Your request was rejected as a result of our safety system."
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}
            return JSONResponse({"error": error}, 400)
        if body.get("stream"):
            record = StreamRecord(model=model)
            state.streams.append(record)
            if model == "fake-slow-stream":
                pieces, gap = [f"part{i} " for i in range(SLOW_STREAM_CHUNKS)], STREAM_GAP_SECONDS
            elif model == "fake-long-stream":
                pieces, gap = ["tick "] * int(LONG_STREAM_SECONDS / 0.05), 0.05
            elif model == "fake-drop-stream":
                pieces, gap = [f"piece{i} " for i in range(DROP_AFTER_CHUNKS + 3)], 0.05
            else:
                pieces, gap = ["Hello ", "from the ", "fake provider."], 0.0
            return StreamingResponse(stream(model, pieces, gap, record), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            }
        )

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )
