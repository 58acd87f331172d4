"""A loopback OpenAI-compatible provider whose behaviour the tests control.

LiteLLM deployments point at it (`api_base`); the upstream model name picks the
behaviour, so one server plays every provider scenario. Chat completions:

    anything else     normal reply (or a stream of 3 quick chunks); use an OpenAI
                      catalog name such as gpt-4o-mini so LiteLLM forwards `user`
    fake-slow-stream  5 content chunks, STREAM_GAP_SECONDS apart
    fake-lockstep-stream  5 content chunks, each after the first only once the test has
                      released it (FakeProviderState.release_next_chunk: the client has the
                      one before), so a relay that holds chunks back shows without timing
    fake-long-stream  a chunk every 50 ms for 30 s (for disconnect tests)
    fake-429, *-429   429 with Retry-After: 7 (every endpoint)
    fake-500, *-500   500 (every endpoint)
    fake-hang, *-hang never answers within a test's patience (every endpoint)
    fake-usage-late   a normal stream whose usage event (and [DONE]) follows the finish_reason
                      chunk only after USAGE_DELAY_SECONDS
    fake-drop-stream  a stream that drops the TCP connection after DROP_AFTER_CHUNKS content chunks
    fake-context-window  400 "maximum context length" (LiteLLM: ContextWindowExceededError)
    fake-content-policy  400 content_policy_violation (LiteLLM: ContentPolicyViolationError)

The other OpenAI operations (and Cohere's rerank) answer in the real shapes, with usage:

    POST /v1/embeddings            one vector (EMBEDDING_DIMENSIONS, or `dimensions`) per input,
                                   float or base64; usage.prompt_tokens = 5 x the number of inputs
    POST /v1/completions           legacy text completion; a stream of 3 chunks, a finish chunk,
                                   then (with stream_options.include_usage) a usage chunk
    POST /v1/responses             Responses JSON, or SSE (event: + data:) ending with
                                   response.completed and its usage
    POST /v1/audio/transcriptions  multipart; verbose_json with duration TRANSCRIPTION_SECONDS
                                   (LiteLLM asks for it when the client names no format), json
                                   with usage.seconds, or text
    POST /v1/audio/speech          SPEECH_BYTES as audio/mpeg (a WAV for response_format wav)
    POST /v1/moderations           one result per input, flagged when it contains FLAGGED_WORD
    POST /v2/rerank                Cohere v2: results by word overlap, top_n,
                                   meta.billed_units.search_units = 1
    POST /v1/images/generations    n b64 PNGs (PNG_B64) with gpt-image-style token usage
    POST /v1/images/edits          the same for a multipart edit (image or image[] parts)

Every request at every endpoint is recorded in FakeProviderState.calls (endpoint, body,
headers); chat completion bodies also in FakeProviderState.requests, as before. A multipart
body is recorded as its text fields plus, per file part, {filename, content_type, size}
(a list when the part repeats, as image[] does).
"""

import asyncio
import base64
import io
import json
import random
import re
import struct
import threading
import time
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesParser
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
LOCKSTEP_PATIENCE_SECONDS = 10.0
# bench-latency (scripts/bench_flood.py --latency realistic): a provider's own answer time
LATENCY_ANSWER_SECONDS = (0.3, 0.8)  # non-streaming: uniform in this range
LATENCY_STREAM_DELTAS, LATENCY_STREAM_GAP_SECONDS = 60, 0.05  # a stream of ~3 s

EMBEDDING_DIMENSIONS = 8
EMBEDDING_TOKENS_PER_INPUT = 5
COMPLETION_TEXT = "Hello from the fake completion."
RESPONSES_TEXT = "Hello from fake responses."
TRANSCRIPT = "hello from the fake transcription"
TRANSCRIPTION_SECONDS = 2.5
SPEECH_BYTES = b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 118  # starts like an mp3 with an ID3 tag
FLAGGED_WORD = "kill"
MODERATION_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")
SEARCH_UNITS = 1
# 1x1 PNG
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
IMAGE_OUTPUT_TOKENS = 100  # per image


@dataclass
class StreamRecord:
    model: str
    chunks_sent: int = 0
    finished: bool = False  # sent everything
    closed_early_at: float | None = None  # the reader went away first
    dropped: bool = False  # the provider itself broke the connection off (fake-drop-stream)
    finish_sent_at: float | None = None  # when the finish_reason chunk went out
    waited_out: int = 0  # fake-lockstep-stream: chunks sent without the test's release (held back on the way)


@dataclass
class ProviderCall:
    endpoint: str  # the path after /v1 ("chat/completions", "embeddings", "audio/speech", ...); Cohere's is "v2/rerank"
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeProviderState:
    streams: list[StreamRecord] = field(default_factory=list)
    calls: list[ProviderCall] = field(default_factory=list)  # every request, every endpoint, in order
    lockstep: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def release_next_chunk(self) -> None:
        """fake-lockstep-stream: the client has the last chunk; the provider may send the next."""
        self.lockstep.release()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Chat completion bodies, in order (failed attempts included)."""
        return [call.body for call in self.calls if call.endpoint == "chat/completions"]

    def bodies_for(self, model: str) -> list[dict[str, Any]]:
        """Chat completion bodies for an upstream model."""
        return [body for body in self.requests if body.get("model") == model]

    def bodies_at(self, endpoint: str, model: str | None = None) -> list[dict[str, Any]]:
        """Bodies received at one endpoint ("embeddings", "v2/rerank", ...), optionally for one upstream model."""
        return [call.body for call in self.calls if call.endpoint == endpoint and (model is None or call.body.get("model") == model)]


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


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


async def _multipart(request: Request) -> dict[str, Any]:
    """A multipart/form-data body as a dict (standard library parser: no python-multipart needed)."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=email_policy.HTTP).parsebytes(head + await request.body())
    fields: dict[str, Any] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        value: Any = data.decode("utf-8", "replace") if filename is None else {
            "filename": filename, "content_type": part.get_content_type(), "size": len(data)
        }
        if name in fields:
            fields[name] = [*fields[name], value] if isinstance(fields[name], list) else [fields[name], value]
        else:
            fields[name] = value
    return fields


def _failure(model: str) -> Response | None:
    """The failures every endpoint plays for upstream names ending in -429 or -500."""
    if model.endswith("-429"):
        return JSONResponse(
            {"error": {"message": "Rate limit reached for requests", "type": "rate_limit_error"}},
            status_code=429,
            headers={"retry-after": "7"},
        )
    if model.endswith("-500"):
        return JSONResponse({"error": {"message": "internal provider failure", "type": "server_error"}}, 500)
    return None


def _inputs(value: Any) -> list[Any]:
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]  # one text, or one token list
    return list(value) if isinstance(value, list) else [value]


def _wav(seconds: float = 0.25, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def _words(text: Any) -> set[str]:
    if isinstance(text, dict):
        text = text.get("text", "")
    return set(re.findall(r"\w+", str(text).lower()))


def create_fake_provider(state: FakeProviderState) -> Starlette:
    async def stream(model: str, pieces: list[str], gap: float, record: StreamRecord):  # type: ignore[no-untyped-def]
        try:
            yield _chunk(model, {"role": "assistant", "content": ""})
            for number, piece in enumerate(pieces):
                if model == "fake-lockstep-stream" and number > 0:
                    released = await asyncio.to_thread(state.lockstep.acquire, True, LOCKSTEP_PATIENCE_SECONDS)
                    record.waited_out += 0 if released else 1
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

    def log_call(request: Request, endpoint: str, body: dict[str, Any]) -> None:
        headers = {name: value for name, value in request.headers.items() if name.lower() != "authorization"}
        state.calls.append(ProviderCall(endpoint=endpoint, body=body, headers=headers))

    async def chat_completions(body: dict[str, Any]) -> Response:
        model = str(body.get("model", ""))
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
            if model == "fake-lockstep-stream":
                while state.lockstep.acquire(blocking=False):
                    pass  # a release left over from an earlier stream
                pieces, gap = [f"part{i} " for i in range(SLOW_STREAM_CHUNKS)], 0.0
            elif model == "fake-slow-stream":
                pieces, gap = [f"part{i} " for i in range(SLOW_STREAM_CHUNKS)], STREAM_GAP_SECONDS
            elif model == "fake-long-stream":
                pieces, gap = ["tick "] * int(LONG_STREAM_SECONDS / 0.05), 0.05
            elif model == "fake-drop-stream":
                pieces, gap = [f"piece{i} " for i in range(DROP_AFTER_CHUNKS + 3)], 0.05
            elif model == "bench-stream":  # scripts/bench_overhead.py --mode stream: 10 deltas, 10 ms apart
                pieces, gap = [f"tok{i} " for i in range(10)], 0.01
            elif model == "bench-latency":  # a realistic stream: ~3 s
                pieces, gap = [f"tok{i} " for i in range(LATENCY_STREAM_DELTAS)], LATENCY_STREAM_GAP_SECONDS
            else:
                pieces, gap = ["Hello ", "from the ", "fake provider."], 0.0
            return StreamingResponse(stream(model, pieces, gap, record), media_type="text/event-stream")
        if model == "bench-latency":  # a realistic answer time
            await asyncio.sleep(random.uniform(*LATENCY_ANSWER_SECONDS))
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

    Handler = Callable[[dict[str, Any]], Awaitable[Response]]

    def endpoint(name: str, handler: Handler, multipart: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Records the body, plays the failures the model name asks for, then answers."""

        async def handle(request: Request) -> Response:
            body = await _multipart(request) if multipart else await request.json()
            log_call(request, name, body)
            model = str(body.get("model", ""))
            failure = _failure(model)
            if failure is not None:
                return failure
            if model.endswith("-hang"):
                await asyncio.sleep(120)
            return await handler(body)

        return handle

    async def embeddings(body: dict[str, Any]) -> Response:
        items = _inputs(body.get("input"))
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        data = []
        for index in range(len(items)):
            vector = [round(0.01 * (index + 1) * (position + 1), 6) for position in range(dimensions)]
            value: Any = vector
            if body.get("encoding_format") == "base64":
                value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = EMBEDDING_TOKENS_PER_INPUT * len(items)
        return JSONResponse({"object": "list", "model": body.get("model"), "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def completions(body: dict[str, Any]) -> Response:
        model = str(body.get("model", ""))
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}

        def chunk(text: str, finish: str | None = None, **extra: Any) -> bytes:
            choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
            return _sse({"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices, **extra})

        if not body.get("stream"):
            choice = {"index": 0, "text": COMPLETION_TEXT, "logprobs": None, "finish_reason": "stop"}
            return JSONResponse(
                {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()), "model": model, "choices": [choice], "usage": usage}
            )

        async def events() -> AsyncIterator[bytes]:
            for piece in ("Hello ", "from the ", "fake completion."):
                yield chunk(piece)
            yield chunk("", "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _sse({"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def response_object(body: dict[str, Any], response_id: str, done: bool) -> dict[str, Any]:
        message = {
            "type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": RESPONSES_TEXT, "annotations": []}],
        }
        usage = {
            "input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        return {
            "id": response_id, "object": "response", "created_at": int(time.time()), "model": body.get("model"),
            "status": "completed" if done else "in_progress", "output": [message] if done else [], "usage": usage if done else None,
            "error": None, "incomplete_details": None, "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
            "temperature": 1.0, "top_p": 1.0, "user": body.get("user"),
        }

    async def responses(body: dict[str, Any]) -> Response:
        response_id = f"resp_{uuid.uuid4().hex}"
        if not body.get("stream"):
            return JSONResponse(response_object(body, response_id, done=True))

        async def events() -> AsyncIterator[bytes]:
            sequence = 0

            def event(kind: str, **payload: Any) -> bytes:
                nonlocal sequence
                sequence += 1
                return _sse({"type": kind, "sequence_number": sequence - 1, **payload}, event=kind)

            yield event("response.created", response=response_object(body, response_id, done=False))
            yield event("response.in_progress", response=response_object(body, response_id, done=False))
            item = {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant", "content": []}
            yield event("response.output_item.added", output_index=0, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            yield event("response.content_part.added", item_id="msg_fake", output_index=0, content_index=0, part=part)
            for piece in ("Hello ", "from ", "fake responses."):
                yield event("response.output_text.delta", item_id="msg_fake", output_index=0, content_index=0, delta=piece)
            yield event("response.output_text.done", item_id="msg_fake", output_index=0, content_index=0, text=RESPONSES_TEXT)
            yield event("response.content_part.done", item_id="msg_fake", output_index=0, content_index=0, part={**part, "text": RESPONSES_TEXT})
            done = response_object(body, response_id, done=True)
            yield event("response.output_item.done", output_index=0, item=done["output"][0])
            yield event("response.completed", response=done)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def transcriptions(body: dict[str, Any]) -> Response:
        response_format = body.get("response_format") or "json"
        if response_format in ("text", "srt", "vtt"):
            return Response(TRANSCRIPT, media_type="text/plain")
        if response_format == "verbose_json":
            segment = {"id": 0, "seek": 0, "start": 0.0, "end": TRANSCRIPTION_SECONDS, "text": TRANSCRIPT, "tokens": [], "temperature": 0.0}
            return JSONResponse({"task": "transcribe", "language": body.get("language") or "english", "duration": TRANSCRIPTION_SECONDS, "text": TRANSCRIPT, "segments": [segment]})
        return JSONResponse({"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": int(TRANSCRIPTION_SECONDS + 0.999)}})

    async def speech(body: dict[str, Any]) -> Response:
        if body.get("response_format") == "wav":
            return Response(_wav(), media_type="audio/wav")
        return Response(SPEECH_BYTES, media_type="audio/mpeg")

    async def moderations(body: dict[str, Any]) -> Response:
        results = []
        for item in _inputs(body.get("input")):
            flagged = FLAGGED_WORD in _words(item)
            results.append(
                {
                    "flagged": flagged,
                    "categories": {name: flagged and name == "violence" for name in MODERATION_CATEGORIES},
                    "category_scores": {name: 0.9 if flagged and name == "violence" else 0.001 for name in MODERATION_CATEGORIES},
                }
            )
        return JSONResponse({"id": f"modr-{uuid.uuid4().hex[:12]}", "model": body.get("model"), "results": results})

    async def rerank(body: dict[str, Any]) -> Response:
        documents = body.get("documents") or []
        query = _words(body.get("query", ""))
        scores = [(len(query & _words(document)) / max(len(query), 1), index) for index, document in enumerate(documents)]
        scores.sort(key=lambda pair: (-pair[0], pair[1]))
        top = scores[: int(body.get("top_n") or len(documents))]
        results = [{"index": index, "relevance_score": round(0.1 + 0.8 * score, 4)} for score, index in top]
        return JSONResponse({"id": f"rerank-{uuid.uuid4().hex[:12]}", "results": results, "meta": {"billed_units": {"search_units": SEARCH_UNITS}}})

    async def images(body: dict[str, Any]) -> Response:
        n = int(body.get("n") or 1)
        usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": IMAGE_OUTPUT_TOKENS * n, "total_tokens": PROMPT_TOKENS + IMAGE_OUTPUT_TOKENS * n,
                 "input_tokens_details": {"text_tokens": PROMPT_TOKENS, "image_tokens": 0}}
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": PNG_B64} for _ in range(n)], "usage": usage})

    routes = [
        Route("/v1/chat/completions", endpoint("chat/completions", chat_completions), methods=["POST"]),
        Route("/chat/completions", endpoint("chat/completions", chat_completions), methods=["POST"]),
        Route("/v1/models", models),
        Route("/v2/rerank", endpoint("v2/rerank", rerank), methods=["POST"]),
    ]
    for name, handler, multipart in (
        ("embeddings", embeddings, False),
        ("completions", completions, False),
        ("responses", responses, False),
        ("audio/transcriptions", transcriptions, True),
        ("audio/speech", speech, False),
        ("moderations", moderations, False),
        ("images/generations", images, False),
        ("images/edits", images, True),
    ):
        routes.append(Route(f"/v1/{name}", endpoint(name, handler, multipart), methods=["POST"]))
    return Starlette(routes=routes)
