#!/usr/bin/env python3
"""A keyless loopback provider for the local stack: OpenAI's protocol (and Cohere's rerank).

scripts/dev.sh starts it before LiteLLM, on a free loopback port, and hands its URL to
LiteLLM as MOCK_PROVIDER_URL (`http://127.0.0.1:<port>/v1`) and MOCK_PROVIDER_ROOT (the same
without `/v1`, for Cohere, which posts to `{api_base}/v2/rerank`). The mock deployments of
config/litellm.dev.yaml that LiteLLM's own `mock_response` cannot serve point at it with
`api_base: os.environ/MOCK_PROVIDER_URL`. It needs no key (any bearer is accepted), no
network and only the BFF's virtual environment (Starlette, uvicorn; multipart bodies are
parsed with the standard library). Answers are deterministic and come in the real shapes,
usage included, so LiteLLM prices them:

  POST /v1/chat/completions   a short reply, streamed (with the include_usage chunk) or not.
                              Upstream model `mock-tools`: a call of the tool `generate_image`
                              with {"prompt": <the last user message>}, unless the last message
                              is a tool result (then a short text answer), so that a client's
                              tool loop ends; when tools are offered and none is named
                              generate_image it answers in text instead.
  POST /v1/completions        legacy text completion, streamed or not
  POST /v1/responses          OpenAI Responses, JSON or SSE (event: + data: lines, ending with
                              response.completed and its usage)
  POST /v1/embeddings         one vector per input (hashed bag of words, unit length, so that
                              texts sharing words are close: RAG works in mock mode),
                              `dimensions` (default 256) and encoding_format float|base64
  POST /v1/audio/transcriptions  multipart; json | verbose_json (with duration) | text | srt |
                              vtt. The duration is measured for WAV uploads, estimated from
                              the size (128 kbit/s) otherwise
  POST /v1/audio/speech       a generated WAV tone (about 60 ms per character, at most 6 s);
                              response_format pcm gives raw 24 kHz 16-bit mono, every other
                              format a WAV (audio/wav)
  POST /v1/moderations        one result per input; flagged when a text contains a word of
                              FLAGGED_WORDS (e.g. "kill": violence)
  POST /v2/rerank             Cohere v2 shape: word-overlap relevance, top_n, return_documents,
                              meta.billed_units.search_units (1 per 100 documents)
  POST /v1/images/generations n (1-10) PNGs of the requested size, b64_json (default) or a
                              data: URL (response_format url), gpt-image-style token usage
  POST /v1/images/edits       multipart (image, image[] and mask parts): the same answer, sized
                              like the first PNG sent unless `size` says otherwise
  GET  /v1/models, GET /health

    .venv/bin/python scripts/mock_provider.py [--host 127.0.0.1] [--port 0] [--port-file FILE]

--port 0 (the default) binds a free port; --port-file receives the bound port.
"""

from __future__ import annotations

import argparse
import array
import base64
import hashlib
import io
import json
import math
import re
import socket
import struct
import sys
import time
import uuid
import wave
import zlib
from collections.abc import AsyncIterator, Iterable
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

TOOL_NAME = "generate_image"
DEFAULT_DIMENSIONS = 256
MAX_IMAGES = 10
MAX_IMAGE_SIDE = 2048
FLAGGED_WORDS = {"kill": "violence", "murder": "violence", "hate": "hate", "bomb": "illicit/violent"}
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
WORD = re.compile(r"[\w']+")


class BadRequest(Exception):
    """Answered as OpenAI's 400 error shape."""


# --- small helpers ------------------------------------------------------------------------


def tokens_of(text: str) -> int:
    """Roughly what a tokenizer would count (4 characters a token), never 0."""
    return max(1, math.ceil(len(text) / 4))


def text_of(value: Any) -> str:
    """The text inside a message content, a Responses input or a moderation input."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(filter(None, (text_of(item) for item in value)))
    if isinstance(value, dict):
        for key in ("text", "content", "input_text", "output", "arguments"):
            if key in value:
                return text_of(value[key])
    return ""


def ids(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class Part:
    def __init__(self, name: str, filename: str | None, content_type: str, data: bytes) -> None:
        self.name, self.filename, self.content_type, self.data = name, filename, content_type, data


async def form_parts(request: Request) -> list[Part]:
    """multipart/form-data with the standard library's MIME parser (no python-multipart needed)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("expected a multipart/form-data body")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=email_policy.HTTP).parsebytes(head + await request.body())
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            data = part.get_payload(decode=True) or b""
            parts.append(Part(str(name), part.get_filename(), part.get_content_type(), data))
    return parts


def fields_of(parts: list[Part]) -> dict[str, str]:
    return {part.name: part.data.decode("utf-8", "replace") for part in parts if part.filename is None}


def int_field(value: Any, default: int, low: int, high: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"'{name}' must be an integer") from None
    if not low <= number <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}")
    return number


def sse(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


# --- media --------------------------------------------------------------------------------


def png(width: int, height: int, seed: str) -> bytes:
    """A valid RGB PNG of one colour picked from the seed (compresses to a few kB at any size)."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * width
    pixels = zlib.compress(row * height, 6)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def image_size(value: Any, fallback: tuple[int, int] = (1024, 1024)) -> tuple[int, int]:
    if value in (None, "", "auto"):
        return fallback
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", str(value))
    if not match:
        raise BadRequest("'size' must be WIDTHxHEIGHT or auto")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise BadRequest(f"'size' must be at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}")
    return width, height


def tone(seconds: float, rate: int) -> bytes:
    """16-bit mono samples of a soft 440 Hz tone."""
    samples = array.array("h", (int(6000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(tone(seconds, rate))
    return out.getvalue()


def audio_seconds(data: bytes) -> float:
    try:
        with wave.open(io.BytesIO(data)) as audio:
            return round(audio.getnframes() / audio.getframerate(), 3)
    except (wave.Error, EOFError, ZeroDivisionError):
        return round(max(len(data) / 16000, 0.1), 3)  # 128 kbit/s, as an mp3 would be


# --- text and vectors ---------------------------------------------------------------------


def reply_for(model: str, prompt: str) -> str:
    words = WORD.findall(prompt)
    echo = " ".join(words[:8]) + (" ..." if len(words) > 8 else "")
    return f"Hello from {model}, the keyless mock provider. You said: {echo or '(nothing)'}"


def pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word + (" " if index < len(words) - 1 else "") for index, word in enumerate(words)]


def embedding(text: str, dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for word in WORD.findall(text.lower()) or [""]:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "little") % dimensions] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [round(value / norm, 6) for value in vector]


def float32_base64(vector: list[float]) -> str:
    values = array.array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def offered_tools(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            if function.get("name"):
                names.append(str(function["name"]))
    return names


# --- chat completions ---------------------------------------------------------------------


def chat_usage(prompt: str, answer: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = tokens_of(prompt), tokens_of(answer)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def chat_plan(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(text, tool call or None) for this request."""
    model = str(body.get("model") or "mock")
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    prompt = last_user_text(messages)
    if "tools" not in model:
        return reply_for(model, prompt), None
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return f"The {TOOL_NAME} tool answered; the image for \"{prompt}\" is ready.", None
    offered = offered_tools(body)
    if offered and TOOL_NAME not in offered:
        return f"I would call {TOOL_NAME}, but it was not offered (offered: {', '.join(offered)}).", None
    call = {"id": ids("call_"), "type": "function", "function": {"name": TOOL_NAME, "arguments": json.dumps({"prompt": prompt or "a picture"})}}
    return "", call


async def chat_completions(request: Request) -> Response:
    body = await json_body(request)
    model = str(body.get("model") or "mock")
    text, call = chat_plan(body)
    prompt = " ".join(text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
    usage = chat_usage(prompt, text or (call or {}).get("function", {}).get("arguments", ""))
    completion_id, created = ids("chatcmpl-"), int(time.time())
    finish = "tool_calls" if call else "stop"
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if call:
            message["tool_calls"] = [call]
        return JSONResponse(
            {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage, "system_fingerprint": "fp_mock",
            }
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]})

    async def events() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        if call:
            start = {"index": 0, "id": call["id"], "type": "function", "function": {"name": TOOL_NAME, "arguments": ""}}
            yield chunk({"tool_calls": [start]})
            arguments = call["function"]["arguments"]
            for offset in range(0, len(arguments), 16):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[offset : offset + 16]}}]})
        for piece in pieces(text) if text else []:
            yield chunk({"content": piece})
        yield chunk({}, finish)
        if include_usage:
            yield sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def completions(request: Request) -> Response:
    body = await json_body(request)
    model = str(body.get("model") or "mock")
    prompt = text_of(body.get("prompt"))
    text = reply_for(model, prompt)
    usage = chat_usage(prompt, text)
    completion_id, created = ids("cmpl-"), int(time.time())
    if not body.get("stream"):
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
        return JSONResponse({"id": completion_id, "object": "text_completion", "created": created, "model": model, "choices": [choice], "usage": usage})
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(piece: str, finish: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}]
        return sse({"id": completion_id, "object": "text_completion", "created": created, "model": model, "choices": choices, **extra})

    async def events() -> AsyncIterator[bytes]:
        for piece in pieces(text):
            yield chunk(piece)
        yield chunk("", "stop")
        if include_usage:
            yield sse({"id": completion_id, "object": "text_completion", "created": created, "model": model, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


# --- responses ----------------------------------------------------------------------------


def response_object(body: dict[str, Any], response_id: str, status: str, text: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    output = []
    if text is not None:
        output = [{"type": "message", "id": "msg_" + response_id[5:], "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"), "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
        "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


async def responses(request: Request) -> Response:
    body = await json_body(request)
    model = str(body.get("model") or "mock")
    prompt = text_of(body.get("input"))
    text = reply_for(model, prompt)
    input_tokens, output_tokens = tokens_of(text_of(body.get("instructions")) + prompt), tokens_of(text)
    usage = {
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    response_id = ids("resp_")
    if not body.get("stream"):
        return JSONResponse(response_object(body, response_id, "completed", text, usage))
    item_id = "msg_" + response_id[5:]

    async def events() -> AsyncIterator[bytes]:
        sequence = 0

        def event(kind: str, **payload: Any) -> bytes:
            nonlocal sequence
            sequence += 1
            return sse({"type": kind, "sequence_number": sequence - 1, **payload}, event=kind)

        yield event("response.created", response=response_object(body, response_id, "in_progress", None, None))
        yield event("response.in_progress", response=response_object(body, response_id, "in_progress", None, None))
        item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
        yield event("response.output_item.added", output_index=0, item=item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part)
        for piece in pieces(text):
            yield event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=piece, logprobs=[])
        yield event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text, logprobs=[])
        yield event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part={**part, "text": text})
        done = response_object(body, response_id, "completed", text, usage)
        yield event("response.output_item.done", output_index=0, item=done["output"][0])
        yield event("response.completed", response=done)

    return StreamingResponse(events(), media_type="text/event-stream")


# --- embeddings, moderations, rerank ------------------------------------------------------


def inputs_of(value: Any) -> list[Any]:
    """A string, a token list, or a list of either: one entry per vector to return."""
    if value is None or value == "" or value == []:
        raise BadRequest("'input' must not be empty")
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]
    if isinstance(value, list):
        return value
    raise BadRequest("'input' must be a string or a list")


async def embeddings(request: Request) -> Response:
    body = await json_body(request)
    items = inputs_of(body.get("input"))
    dimensions = int_field(body.get("dimensions"), DEFAULT_DIMENSIONS, 1, 4096, "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be float or base64")
    data, prompt_tokens = [], 0
    for index, item in enumerate(items):
        text = " ".join(map(str, item)) if isinstance(item, list) else str(item)
        prompt_tokens += len(item) if isinstance(item, list) else tokens_of(text)
        vector = embedding(text, dimensions)
        data.append({"object": "embedding", "index": index, "embedding": float32_base64(vector) if encoding == "base64" else vector})
    return JSONResponse(
        {"object": "list", "model": body.get("model"), "data": data, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    )


async def moderations(request: Request) -> Response:
    body = await json_body(request)
    items = inputs_of(body.get("input"))
    if all(isinstance(item, dict) and "type" in item for item in items):
        items = [items]  # one multimodal input (text and image parts): one result
    results = []
    for item in items:
        words = set(WORD.findall(text_of(item).lower()))
        hits = {FLAGGED_WORDS[word] for word in words if word in FLAGGED_WORDS}
        results.append(
            {
                "flagged": bool(hits),
                "categories": {name: name in hits for name in MODERATION_CATEGORIES},
                "category_scores": {name: 0.91 if name in hits else 0.0001 for name in MODERATION_CATEGORIES},
                "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
            }
        )
    return JSONResponse({"id": ids("modr-"), "model": body.get("model") or "omni-moderation-latest", "results": results})


async def rerank(request: Request) -> Response:
    body = await json_body(request)
    query = text_of(body.get("query"))
    documents = body.get("documents")
    if not query or not isinstance(documents, list) or not documents:
        raise BadRequest("'query' and a non-empty 'documents' list are required")
    top_n = int_field(body.get("top_n"), len(documents), 1, 10_000, "top_n")
    wanted = set(WORD.findall(query.lower()))
    scored = []
    for index, document in enumerate(documents):
        words = set(WORD.findall(text_of(document).lower()))
        overlap = len(wanted & words) / len(wanted) if wanted else 0.0
        scored.append((round(0.05 + 0.9 * overlap - 0.001 * index, 6), index, document))
    scored.sort(key=lambda entry: (-entry[0], entry[1]))
    results = []
    for score, index, document in scored[:top_n]:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.get("return_documents"):
            result["document"] = {"text": text_of(document)}
        results.append(result)
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": math.ceil(len(documents) / 100)}}
    return JSONResponse({"id": str(uuid.uuid4()), "results": results, "meta": meta})


# --- audio --------------------------------------------------------------------------------


def timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}{separator}{millis % 1000:03d}"


async def transcriptions(request: Request) -> Response:
    parts = await form_parts(request)
    fields = fields_of(parts)
    upload = next((part for part in parts if part.name == "file" and part.filename is not None), None)
    if upload is None:
        raise BadRequest("a 'file' part is required")
    seconds = audio_seconds(upload.data)
    text = f"This is a mock transcription of {seconds:g} seconds of audio."
    response_format = fields.get("response_format") or "json"
    language = fields.get("language") or "english"
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format in ("srt", "vtt"):
        if response_format == "srt":
            return PlainTextResponse(f"1\n{timestamp(0, ',')} --> {timestamp(seconds, ',')}\n{text}\n\n")
        return PlainTextResponse(f"WEBVTT\n\n{timestamp(0, '.')} --> {timestamp(seconds, '.')}\n{text}\n\n", media_type="text/vtt")
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if response_format == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text, "tokens": [], "temperature": 0.0,
                   "avg_logprob": -0.1, "compression_ratio": 1.0, "no_speech_prob": 0.01}
        return JSONResponse({"task": "transcribe", "language": language, "duration": seconds, "text": text, "segments": [segment], "usage": usage})
    if response_format != "json":
        raise BadRequest("'response_format' must be json, verbose_json, text, srt or vtt")
    return JSONResponse({"text": text, "usage": usage})


async def speech(request: Request) -> Response:
    body = await json_body(request)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'input' must be a non-empty string")
    seconds = min(max(0.06 * len(text), 0.3), 6.0)
    if body.get("response_format") == "pcm":
        return Response(tone(seconds, 24000), media_type="audio/pcm")
    return Response(wav(seconds), media_type="audio/wav")


# --- images -------------------------------------------------------------------------------


def images_answer(prompt: str, n: int, size: tuple[int, int], response_format: str) -> JSONResponse:
    if response_format not in ("b64_json", "url"):
        raise BadRequest("'response_format' must be b64_json or url")
    data = []
    for index in range(n):
        encoded = base64.b64encode(png(size[0], size[1], f"{prompt}#{index}")).decode()
        data.append({"url": f"data:image/png;base64,{encoded}"} if response_format == "url" else {"b64_json": encoded})
    input_tokens = tokens_of(prompt)
    usage = {"input_tokens": input_tokens, "output_tokens": 272 * n, "total_tokens": input_tokens + 272 * n,
             "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0}}
    return JSONResponse({"created": int(time.time()), "data": data, "background": "opaque", "output_format": "png",
                         "quality": "low", "size": f"{size[0]}x{size[1]}", "usage": usage})


async def image_generations(request: Request) -> Response:
    body = await json_body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("'prompt' must be a non-empty string")
    n = int_field(body.get("n"), 1, 1, MAX_IMAGES, "n")
    return images_answer(prompt, n, image_size(body.get("size")), body.get("response_format") or "b64_json")


async def image_edits(request: Request) -> Response:
    parts = await form_parts(request)
    fields = fields_of(parts)
    images = [part for part in parts if part.name in ("image", "image[]") and part.filename is not None]
    if not images:
        raise BadRequest("an 'image' (or 'image[]') part is required")
    prompt = fields.get("prompt", "")
    if not prompt.strip():
        raise BadRequest("'prompt' must be a non-empty string")
    n = int_field(fields.get("n"), 1, 1, MAX_IMAGES, "n")
    size = image_size(fields.get("size"), fallback=png_size(images[0].data) or (1024, 1024))
    return images_answer(prompt, n, size, fields.get("response_format") or "b64_json")


# --- the app ------------------------------------------------------------------------------


async def models(_: Request) -> Response:
    return JSONResponse({"object": "list", "data": []})


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def bad_request(_: Request, error: Exception) -> Response:
    return JSONResponse({"error": {"message": str(error), "type": "invalid_request_error", "param": None, "code": None}}, 400)


def create_app() -> Starlette:
    routes = [Route("/health", health), Route("/v2/rerank", rerank, methods=["POST"])]
    endpoints: Iterable[tuple[str, Any]] = (
        ("/chat/completions", chat_completions), ("/completions", completions), ("/responses", responses),
        ("/embeddings", embeddings), ("/moderations", moderations), ("/rerank", rerank),
        ("/audio/transcriptions", transcriptions), ("/audio/speech", speech),
        ("/images/generations", image_generations), ("/images/edits", image_edits),
    )
    for path, endpoint in endpoints:
        routes.append(Route("/v1" + path, endpoint, methods=["POST"]))
    routes.append(Route("/v1/models", models))
    return Starlette(routes=routes, exception_handlers={BadRequest: bad_request})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    if args.port_file:
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(f"{port}\n")
        temporary.replace(args.port_file)  # readers never see a half-written file
    print(f"mock provider on http://{args.host}:{port}/v1", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="info", access_log=True))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
