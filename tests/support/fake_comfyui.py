"""A loopback ComfyUI speaking its real HTTP and websocket protocol; tests control its behaviour.

Like ComfyUI it validates a queued workflow (known node classes, required inputs, links,
checkpoint names), runs prompts one at a time in queue order, reports each run on the
websocket of the client id that queued it, and writes the history entry when the run
ends. A marker in the positive prompt picks the behaviour of one run:

    (none)          runs STEP_SECONDS per sampler step and saves batch_size PNGs
    [slow]          SLOW_STEP_SECONDS per step (for timeouts); /interrupt stops it
    [fail]          execution_error in the KSampler half-way
    [drop]          closes the client's socket after two progress messages, then finishes
                    normally (so the BFF must poll /history)
    [evil-names]    output file names with ../, absolute paths and backslashes

A checkpoint not in CHECKPOINTS gets 400 with node_errors, as ComfyUI answers.
`state.hold = True` keeps new prompts pending, as when ComfyUI is busy with other work.
"""

import asyncio
import io
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

STEP_SECONDS = 0.01
SLOW_STEP_SECONDS = 0.5
CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "mock.safetensors"]
EVIL_NAMES = [("../../..", "../../etc/passwd"), ("", "/etc/hosts"), ("..\\..", "..\\..\\win.ini"), ("", "a\x00b.png")]
NODE_INPUTS = {
    "CheckpointLoaderSimple": ["ckpt_name"],
    "CLIPTextEncode": ["text", "clip"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "KSampler": ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise", "model", "positive", "negative", "latent_image"],
    "VAEDecode": ["samples", "vae"],
    "SaveImage": ["filename_prefix", "images"],
}
OUTPUT_NODES = {"SaveImage"}


@dataclass
class Run:
    prompt_id: str
    number: int
    client_id: str
    graph: dict[str, Any]
    status: str = "pending"  # pending, running, done
    interrupted: bool = False


@dataclass
class FakeComfyUIState:
    runs: dict[str, Run] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    running: str | None = None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    sockets: dict[str, WebSocket] = field(default_factory=dict)
    interrupts: list[dict[str, Any]] = field(default_factory=list)
    queue_deletes: list[str] = field(default_factory=list)
    history_polls: Counter[str] = field(default_factory=Counter)
    views: list[dict[str, str]] = field(default_factory=list)
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # client id -> messages sent
    hold: bool = False
    counter: int = 0

    def run_for(self, marker: str) -> list[Run]:
        return [run for run in self.runs.values() if marker in _positive_text(run.graph)]


def _positive_text(graph: dict[str, Any]) -> str:
    return " ".join(str(n["inputs"].get("text", "")) for n in graph.values() if n.get("class_type") == "CLIPTextEncode")


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _png(width: int, height: int, seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (seed % 256, (seed >> 8) % 256, 128)).save(out, format="PNG")
    return out.getvalue()


def _validate(graph: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(error, node_errors) as ComfyUI's execution.validate_prompt reports them; (None, {}) when valid."""
    if not isinstance(graph, dict) or not graph:
        return {"type": "no_prompt", "message": "No prompt provided", "details": "", "extra_info": {}}, {}
    for node_id, node in graph.items():
        if not isinstance(node, dict) or node.get("class_type") not in NODE_INPUTS:
            class_type = node.get("class_type") if isinstance(node, dict) else None
            message = f"Cannot execute because node {class_type} does not exist."
            return {"type": "invalid_prompt", "message": message, "details": f"Node ID '#{node_id}'", "extra_info": {}}, {}
    outputs = [node_id for node_id, node in graph.items() if node["class_type"] in OUTPUT_NODES]
    if not outputs:
        return {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, {}
    node_errors: dict[str, Any] = {}
    for node_id, node in graph.items():
        errors = []
        inputs = node.get("inputs") or {}
        for name in NODE_INPUTS[node["class_type"]]:
            if name not in inputs:
                errors.append({"type": "required_input_missing", "message": "Required input is missing", "details": name, "extra_info": {"input_name": name}})
            elif _is_link(inputs[name]) and inputs[name][0] not in graph:
                errors.append({"type": "bad_linked_input", "message": "Bad linked input", "details": name, "extra_info": {"input_name": name}})
        checkpoint = inputs.get("ckpt_name")
        if node["class_type"] == "CheckpointLoaderSimple" and checkpoint not in CHECKPOINTS:
            errors.append({
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"ckpt_name: '{checkpoint}' not in {CHECKPOINTS}",
                "extra_info": {"input_name": "ckpt_name", "received_value": checkpoint},
            })
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": outputs, "class_type": node["class_type"]}
    if node_errors:
        return {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}, node_errors
    return None, {}


def _order(graph: dict[str, Any]) -> list[str]:
    done: list[str] = []
    while len(done) < len(graph):
        for node_id, node in graph.items():
            links = [v[0] for v in node["inputs"].values() if _is_link(v)]
            if node_id not in done and all(link in done for link in links):
                done.append(node_id)
    return done


def create_fake_comfyui(state: FakeComfyUIState) -> Starlette:
    wake = asyncio.Event()

    async def send(run: Run, kind: str, data: dict[str, Any]) -> None:
        message = {"type": kind, "data": data}
        state.sent.setdefault(run.client_id, []).append(message)
        socket = state.sockets.get(run.client_id)
        if socket is not None:
            try:
                await socket.send_json(message)
            except (RuntimeError, OSError, WebSocketDisconnect):  # the client went away
                state.sockets.pop(run.client_id, None)

    def finish(run: Run, status: str, outputs: dict[str, Any], messages: list[Any]) -> None:
        state.history[run.prompt_id] = {
            "prompt": [run.number, run.prompt_id, run.graph, {"client_id": run.client_id}, []],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {},
        }

    async def execute(run: Run) -> None:
        text = _positive_text(run.graph)
        pid = run.prompt_id

        def now() -> int:
            return int(time.time() * 1000)

        started = ["execution_start", {"prompt_id": pid, "timestamp": now()}]
        await send(run, "status", {"status": {"exec_info": {"queue_remaining": len(state.pending) + 1}}})
        await send(run, *started)
        await send(run, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": now()})
        latent = next(n["inputs"] for n in run.graph.values() if n["class_type"] == "EmptyLatentImage")
        outputs: dict[str, Any] = {}
        for node_id in _order(run.graph):
            node = run.graph[node_id]
            await send(run, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            if node["class_type"] == "KSampler":
                steps = int(node["inputs"]["steps"])
                for step in range(1, steps + 1):
                    await asyncio.sleep(SLOW_STEP_SECONDS if "[slow]" in text else STEP_SECONDS)
                    if run.interrupted:
                        data = {"prompt_id": pid, "node_id": node_id, "node_type": "KSampler", "executed": [], "timestamp": now()}
                        await send(run, "execution_interrupted", data)
                        finish(run, "error", outputs, [started, ["execution_interrupted", data]])
                        await send(run, "executing", {"node": None, "prompt_id": pid})
                        return
                    await send(run, "progress", {"value": step, "max": steps, "prompt_id": pid, "node": node_id})
                    if "[drop]" in text and step == 2 and run.client_id in state.sockets:
                        await state.sockets.pop(run.client_id).close(code=1011)
                    if "[fail]" in text and step == steps // 2:
                        data = {
                            "prompt_id": pid, "node_id": node_id, "node_type": "KSampler", "executed": [],
                            "exception_message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                            "exception_type": "torch.OutOfMemoryError", "traceback": ["..."],
                            "current_inputs": {}, "current_outputs": {}, "timestamp": now(),
                        }
                        await send(run, "execution_error", data)
                        finish(run, "error", outputs, [started, ["execution_error", data]])
                        await send(run, "executing", {"node": None, "prompt_id": pid})
                        return
            if node["class_type"] == "SaveImage":
                images = []
                prefix = str(node["inputs"]["filename_prefix"])
                subfolder, _, stem = prefix.rpartition("/")
                for index in range(int(latent["batch_size"])):
                    state.counter += 1
                    if "[evil-names]" in text:
                        subfolder, filename = EVIL_NAMES[index % len(EVIL_NAMES)]
                    else:
                        filename = f"{stem}_{state.counter:05}_.png"
                    state.files[(subfolder, filename)] = _png(int(latent["width"]), int(latent["height"]), state.counter)
                    images.append({"filename": filename, "subfolder": subfolder, "type": "output"})
                outputs[node_id] = {"images": images}
                await send(run, "executed", {"node": node_id, "display_node": node_id, "output": outputs[node_id], "prompt_id": pid})
        success = ["execution_success", {"prompt_id": pid, "timestamp": now()}]
        await send(run, *success)
        finish(run, "success", outputs, [started, success])
        await send(run, "executing", {"node": None, "prompt_id": pid})

    async def worker() -> None:
        while True:
            if not state.pending or state.hold:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), 0.05)
                except TimeoutError:
                    pass
                continue
            run = state.runs[state.pending.pop(0)]
            run.status, state.running = "running", run.prompt_id
            try:
                await execute(run)
            finally:
                run.status, state.running = "done", None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(worker())
        yield
        task.cancel()

    async def post_prompt(request: Request) -> Response:
        body = await request.json()
        graph = body.get("prompt") if isinstance(body, dict) else None
        error, node_errors = _validate(graph)
        if error is not None:
            return JSONResponse({"error": error, "node_errors": node_errors}, status_code=400)
        number = len(state.runs)
        run = Run(prompt_id=str(uuid.uuid4()), number=number, client_id=str(body.get("client_id", "")), graph=graph)
        state.runs[run.prompt_id] = run
        state.pending.append(run.prompt_id)
        wake.set()
        return JSONResponse({"prompt_id": run.prompt_id, "number": number, "node_errors": {}})

    async def get_history(request: Request) -> Response:
        prompt_id = request.path_params["prompt_id"]
        state.history_polls[prompt_id] += 1
        entry = state.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry is not None else {})

    async def view(request: Request) -> Response:
        query = dict(request.query_params)
        state.views.append(query)
        data = state.files.get((query.get("subfolder", ""), query.get("filename", "")))
        if data is None or query.get("type", "output") != "output":
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    def entry(prompt_id: str) -> list[Any]:
        run = state.runs[prompt_id]
        return [run.number, prompt_id, run.graph, {"client_id": run.client_id}, []]

    async def get_queue(_: Request) -> Response:
        running = [entry(state.running)] if state.running else []
        return JSONResponse({"queue_running": running, "queue_pending": [entry(pid) for pid in state.pending]})

    async def post_queue(request: Request) -> Response:
        body = await request.json()
        if body.get("clear"):
            state.pending.clear()
        for prompt_id in body.get("delete", []):
            state.queue_deletes.append(prompt_id)
            if prompt_id in state.pending:
                state.pending.remove(prompt_id)
        return Response(status_code=200)

    async def post_interrupt(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        state.interrupts.append(body)
        target = body.get("prompt_id")
        if state.running and (target is None or target == state.running):
            state.runs[state.running].interrupted = True
        return Response(status_code=200)

    async def system_stats(_: Request) -> Response:
        return JSONResponse({
            "system": {"os": "posix", "ram_total": 0, "ram_free": 0, "comfyui_version": "fake", "python_version": "3", "embedded_python": False, "argv": []},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0}],
        })

    async def websocket(socket: WebSocket) -> None:
        await socket.accept()
        client_id = socket.query_params.get("clientId") or uuid.uuid4().hex
        state.sockets[client_id] = socket
        await socket.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": len(state.pending)}}, "sid": client_id}})
        try:
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            if state.sockets.get(client_id) is socket:
                del state.sockets[client_id]

    return Starlette(
        routes=[
            Route("/prompt", post_prompt, methods=["POST"]),
            Route("/history/{prompt_id}", get_history),
            Route("/view", view),
            Route("/queue", get_queue, methods=["GET"]),
            Route("/queue", post_queue, methods=["POST"]),
            Route("/interrupt", post_interrupt, methods=["POST"]),
            Route("/system_stats", system_stats),
            WebSocketRoute("/ws", websocket),
        ],
        lifespan=lifespan,
    )
