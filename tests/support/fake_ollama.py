"""A loopback Ollama server speaking the real management API, whose behaviour the tests control.

    GET    /api/tags    installed models
    GET    /api/ps      running models
    POST   /api/pull    NDJSON progress lines; the model name picks the behaviour:
                          anything installable   manifest, PULL_LAYERS layer lines PULL_GAP_SECONDS
                                                 apart, verifying, writing, success
                          LONG_PULL              a progress line every 50 ms for 30 s (disconnect tests)
                          STALLED_PULL           one line, then silence for 30 s (idle timeouts)
                          BROKEN_PULL            one line, then a line that is not JSON
                          unknown (UNKNOWN_PREFIX...) the manifest line, then Ollama's error line
    DELETE /api/delete  200, or 404 {"error": "model 'x' not found"}

`FakeOllamaState.mode` makes every route fail: "http500", "garbage" (200 with non-JSON) or
"hang" (answers after HANG_SECONDS).
"""

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PULL_LAYERS = 4
PULL_GAP_SECONDS = 0.15
LAYER_SIZE = 4_000_000
LONG_PULL = "long-pull:latest"
STALLED_PULL = "stalled-pull:latest"
BROKEN_PULL = "broken-pull:latest"
UNKNOWN_PREFIX = "no-such-model"
HANG_SECONDS = 3.0

Mode = Literal["ok", "http500", "garbage", "hang"]


def _details(family: str, parameter_size: str, quantization: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": parameter_size,
        "quantization_level": quantization,
    }


def installed_models() -> dict[str, dict[str, Any]]:
    return {
        "llama3.1:8b": {
            "name": "llama3.1:8b",
            "model": "llama3.1:8b",
            "modified_at": "2024-07-25T10:51:04.123456789+02:00",
            "size": 4920753328,
            "digest": "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
            "details": _details("llama", "8.0B", "Q4_K_M"),
        },
        "library/qwen2.5:7b-instruct-q4_K_M": {
            "name": "library/qwen2.5:7b-instruct-q4_K_M",
            "model": "library/qwen2.5:7b-instruct-q4_K_M",
            "modified_at": "2024-09-20T08:00:00Z",
            "size": 4683087332,
            "digest": "845dbda0ea48ed749caafd9e6037047aa19acfcfd82e704d7ca97d631a0b697e",
            "details": _details("qwen2", "7.6B", "Q4_K_M"),
        },
    }


@dataclass
class Received:
    method: str
    path: str
    body: Any


@dataclass
class PullRecord:
    model: str
    lines_sent: int = 0
    finished: bool = False
    closed_early_at: float | None = None  # the reader went away before the end


@dataclass
class FakeOllamaState:
    mode: Mode = "ok"
    models: dict[str, dict[str, Any]] = field(default_factory=installed_models)
    received: list[Received] = field(default_factory=list)
    pulls: list[PullRecord] = field(default_factory=list)

    def reset(self) -> None:
        self.mode = "ok"
        self.models = installed_models()
        self.received.clear()
        self.pulls.clear()

    def running(self) -> list[dict[str, Any]]:
        first = self.models.get("llama3.1:8b")
        if first is None:
            return []
        entry = {key: first[key] for key in ("name", "model", "size", "digest", "details")}
        return [{**entry, "expires_at": "2024-07-25T11:00:04.5-07:00", "size_vram": 3_000_000_000}]


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode() + b"\n"


def create_fake_ollama(state: FakeOllamaState) -> Starlette:
    async def failure() -> Response | None:
        if state.mode == "http500":
            return JSONResponse({"error": "something broke inside ollama"}, status_code=500)
        if state.mode == "garbage":
            return Response(b"<html>not ollama</html>", media_type="text/html")
        if state.mode == "hang":
            await asyncio.sleep(HANG_SECONDS)
        return None

    async def record(request: Request) -> Any:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        state.received.append(Received(request.method, request.url.path, body))
        return body

    async def tags(request: Request) -> Response:
        await record(request)
        if (failed := await failure()) is not None:
            return failed
        return JSONResponse({"models": list(state.models.values())})

    async def ps(request: Request) -> Response:
        await record(request)
        if (failed := await failure()) is not None:
            return failed
        return JSONResponse({"models": state.running()})

    async def progress(model: str, pull: PullRecord) -> Any:
        try:
            yield _line({"status": "pulling manifest"})
            pull.lines_sent += 1
            if model.startswith(UNKNOWN_PREFIX):
                yield _line({"error": "pull model manifest: file does not exist"})
                pull.finished = True
                return
            if model == STALLED_PULL:
                await asyncio.sleep(30)
            if model == BROKEN_PULL:
                yield b"this is not json\n"
                pull.finished = True
                return
            layers, gap = (600, 0.05) if model == LONG_PULL else (PULL_LAYERS, PULL_GAP_SECONDS)
            digest = "sha256:" + "ab" * 32
            for layer in range(1, layers + 1):
                await asyncio.sleep(gap)
                completed = LAYER_SIZE * layer // layers
                yield _line({"status": f"pulling {digest[7:19]}", "digest": digest, "total": LAYER_SIZE, "completed": completed})
                pull.lines_sent += 1
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                yield _line({"status": status})
                pull.lines_sent += 1
            state.models[model] = {**installed_models()["llama3.1:8b"], "name": model, "model": model}
            pull.finished = True
        finally:
            if not pull.finished:
                pull.closed_early_at = time.monotonic()

    async def pull(request: Request) -> Response:
        body = await record(request)
        if (failed := await failure()) is not None:
            return failed
        model = str(body.get("model") or body.get("name") or "")
        if not model:
            return JSONResponse({"error": "invalid model name"}, status_code=400)
        entry = PullRecord(model=model)
        state.pulls.append(entry)
        return StreamingResponse(progress(model, entry), media_type="application/x-ndjson")

    async def delete(request: Request) -> Response:
        body = await record(request)
        if (failed := await failure()) is not None:
            return failed
        model = str(body.get("model") or body.get("name") or "")
        if state.models.pop(model, None) is None:
            return JSONResponse({"error": f"model '{model}' not found"}, status_code=404)
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/api/tags", tags, methods=["GET"]),
            Route("/api/ps", ps, methods=["GET"]),
            Route("/api/pull", pull, methods=["POST"]),
            Route("/api/delete", delete, methods=["DELETE"]),
        ]
    )
