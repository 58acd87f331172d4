"""Image generation through real BFFs against a loopback ComfyUI that speaks the real protocol.

Live-mode BFFs talk HTTP and websocket to tests/support/fake_comfyui.py; a mock-mode BFF
uses the mock backend. LiteLLM image models go through the real test LiteLLM to the fake
provider (tests/fixtures/litellm.test.yaml, tests/support/fake_openai.py). Media
directories are temporary.
"""

import asyncio
import base64
import http.client
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from openai import OpenAI
from PIL import Image

from bff.clickhouse import ClickHouseStore
from bff.errors import ApiError
from bff.identity.principal import AuthMethod, Principal, Role
from bff.media.workflows import ImageOptions, WorkflowConfigError, load_workflows
from conftest import MASTER_KEY, ROOT, SERVICE_KEY, Bff, BffFactory
from support.fake_comfyui import CHECKPOINTS, FakeComfyUIState, create_fake_comfyui
from support.fake_openai import FakeProviderState
from support.servers import ThreadServer, free_port
from support.spans import spans_for
from test_usage import _as_user, _wait_for_request

WORKFLOWS = ROOT / "config" / "comfyui"
SDXL_COST = Decimal("0.004")
TERMINAL = {"succeeded", "failed", "timed_out"}


@pytest.fixture(scope="module")
def comfy() -> Iterator[tuple[ThreadServer, FakeComfyUIState]]:
    state = FakeComfyUIState()
    server = ThreadServer(create_fake_comfyui(state)).start()
    yield server, state
    server.stop()


@pytest.fixture(scope="module")
def fake(comfy: tuple[ThreadServer, FakeComfyUIState]) -> FakeComfyUIState:
    return comfy[1]


def _media_bff(factory: BffFactory, media_dir: Path, comfy_url: str, **overrides: Any) -> Bff:
    values: dict[str, Any] = {
        "media_dir": media_dir,
        "comfyui_url": comfy_url,
        "comfyui_timeout_seconds": 10.0,
        "comfyui_poll_interval_seconds": 0.05,
        **overrides,
    }
    return factory(**values)


@pytest.fixture(scope="module")
def live(bff_factory: BffFactory, comfy: tuple[ThreadServer, FakeComfyUIState], tmp_path_factory: pytest.TempPathFactory) -> Bff:
    return _media_bff(bff_factory, tmp_path_factory.mktemp("live") / "media", comfy[0].url)


@pytest.fixture(scope="module")
def mock(bff_factory: BffFactory, tmp_path_factory: pytest.TempPathFactory) -> Bff:
    return _media_bff(bff_factory, tmp_path_factory.mktemp("mock") / "media", f"http://127.0.0.1:{free_port()}", generator_mode="mock")


def _fresh_user() -> str:
    return f"img-{uuid.uuid4().hex[:8]}"


def _wait_job(client: httpx.Client, job_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/media/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] in TERMINAL or time.monotonic() > deadline:
            return answer.json()
        time.sleep(0.05)


def _start(client: httpx.Client, prompt: str, **options: Any) -> str:
    answer = client.post("/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": prompt, **options})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    return answer.json()["job_id"]


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/media/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in stream.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            else:
                name, _, value = line.partition(": ")
                current[name] = json.loads(value) if name == "data" else value
    return events


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _run_with(fake: FakeComfyUIState, text: str) -> Any:
    runs = fake.run_for(text)
    assert len(runs) == 1, text
    return runs[0]


# --- Workflow configuration ---------------------------------------------------------


def test_shipped_workflows_validate_and_fill_a_deep_copy() -> None:
    catalog = load_workflows(WORKFLOWS)
    assert catalog.default == "sdxl-basic" and {w.name for w in catalog} == {"sdxl-basic", "mock-image"}
    sdxl = catalog.get("sdxl-basic")
    assert sdxl is not None and sdxl.config.backend == "comfyui"
    assert {node["class_type"] for node in sdxl.graph.values()} == {
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"
    }
    params = sdxl.resolve(ImageOptions(prompt="a fox", seed=7, width=768, height=512, batch_size=2))
    graph = sdxl.fill(params)
    assert graph["6"]["inputs"]["text"] == "a fox" and graph["3"]["inputs"]["seed"] == 7
    assert graph["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 2}
    assert graph["3"]["inputs"]["steps"] == 25 and graph["4"]["inputs"]["ckpt_name"] == CHECKPOINTS[0]
    assert sdxl.graph["6"]["inputs"]["text"] != "a fox" and sdxl.graph["5"]["inputs"]["width"] == 1024
    assert catalog.get("mock-image").config.backend == "mock"  # type: ignore[union-attr]


def _workflows_dir(tmp_path: Path, change: dict[str, Any]) -> Path:
    raw = yaml.safe_load((WORKFLOWS / "workflows.yaml").read_text())
    entry = raw["workflows"]["sdxl-basic"]
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        target = entry
        for part in parents:
            target = target[part]
        target[last] = value
    for name in ("sdxl-basic.json", "mock-image.json"):
        (tmp_path / name).write_text((WORKFLOWS / name).read_text())
    (tmp_path / "workflows.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"parameters.steps": {"node": "99", "input": "steps"}}, ["'sdxl-basic'", "'steps'", "node '99'", "no such node"]),
        ({"parameters.seed": {"node": "3", "input": "noise_seed"}}, ["'sdxl-basic'", "'seed'", "node '3'", "KSampler", "no input 'noise_seed'"]),
        ({"parameters.prompt": {"node": "6", "input": "clip"}}, ["'sdxl-basic'", "'prompt'", "node '6'", "link"]),
        ({"file": "missing.json"}, ["'sdxl-basic'", "missing.json"]),
        ({"defaults.steps": 500}, ["'sdxl-basic'", "'steps'", "between 1 and 60"]),
        ({"backend": "dall-e"}, ["workflows.sdxl-basic.backend"]),
        ({"limits.max_batch": 0}, ["workflows.sdxl-basic.limits.max_batch"]),
        ({"parameters.width": None}, ["workflows.sdxl-basic.parameters.width"]),
    ],
    ids=["unknown node", "unknown input", "linked input", "missing file", "default over limit", "bad backend", "bad limit", "width unmapped"],
)
def test_invalid_workflow_config_is_refused_naming_what_is_wrong(tmp_path: Path, change: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(WorkflowConfigError) as error:
        load_workflows(_workflows_dir(tmp_path, change))
    for part in expected:
        assert part in str(error.value)


def test_a_bff_with_an_invalid_workflow_refuses_to_start(bff_factory: BffFactory, tmp_path: Path) -> None:
    with pytest.raises(WorkflowConfigError, match="node '42'"):
        bff_factory(comfyui_workflows_dir=_workflows_dir(tmp_path, {"parameters.height": {"node": "42", "input": "height"}}))


# --- OpenAI-compatible route ----------------------------------------------------------


def test_openai_sdk_b64_json_and_url(live: Bff, fake: FakeComfyUIState, user_token: str, admin_token: str) -> None:
    sdk = OpenAI(base_url=f"{live.url}/v1", api_key=user_token, max_retries=0)
    answer = sdk.images.generate(model="sdxl-basic", prompt="a red fox in snow", n=2, size="512x384", response_format="b64_json")
    assert len(answer.data) == 2 and answer.created > 0
    for item in answer.data:
        assert item.url is None
        assert _png_size(base64.b64decode(item.b64_json or "")) == (512, 384)
    run = _run_with(fake, "a red fox in snow")
    assert run.graph["5"]["inputs"] == {"width": 512, "height": 384, "batch_size": 2}
    assert run.graph["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors" and run.client_id

    answer = sdk.images.generate(model="sdxl-basic", prompt="a blue whale", size="256x256", response_format="url")
    assert len(answer.data) == 1 and answer.data[0].b64_json is None
    url = answer.data[0].url or ""
    assert url.startswith(f"{live.url}/api/media/images/") and url.endswith("/0")
    path = urlsplit(url).path
    with live.client(user_token) as owner:
        image = owner.get(path)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert _png_size(image.content) == (256, 256)
    with httpx.Client(base_url=live.url) as anonymous:
        assert anonymous.get(path).status_code == 401
    with _as_user(live, _fresh_user()) as other:
        assert other.get(path).status_code == 404
    with live.client(admin_token) as admin:
        assert admin.get(path).status_code == 200


def test_openai_route_defaults_and_validation(live: Bff, fake: FakeComfyUIState, user_token: str) -> None:
    with live.client(user_token) as client:
        default = client.post("/v1/images/generations", json={"prompt": "default workflow please", "response_format": "b64_json"})
        assert default.status_code == 200, default.text
        assert list(default.json()) == ["created", "data"] and list(default.json()["data"][0]) == ["b64_json"]
        assert _png_size(base64.b64decode(default.json()["data"][0]["b64_json"])) == (1024, 1024)
        assert _run_with(fake, "default workflow please").graph["3"]["inputs"]["steps"] == 25
        unknown = client.post("/v1/images/generations", json={"model": "dall-e-3", "prompt": "x"})
        assert unknown.status_code == 404 and "dall-e-3" in unknown.json()["error"]["message"]
        for size in ("big", "1024", "4096x4096", "1001x1000", "32x32", "-512x512"):
            bad = client.post("/v1/images/generations", json={"prompt": "x", "size": size})
            assert bad.status_code == 400 and "'size'" in bad.json()["error"]["message"], size
        for n in (0, 5):
            bad = client.post("/v1/images/generations", json={"prompt": "x", "n": n})
            assert bad.status_code == 400 and "'n'" in bad.json()["error"]["message"], n
        assert client.post("/v1/images/generations", json={"model": "sdxl-basic"}).status_code == 400
        assert client.post("/v1/images/generations", content=b"{not json").status_code == 400


# --- Product route: jobs, progress, events ------------------------------------------------


def test_job_progress_events_arrive_in_order_and_end(live: Bff, user_token: str) -> None:
    with live.client(user_token) as client:
        job_id = _start(client, "lighthouse at dusk", steps=12, width=320, height=256, batch_size=2, seed=42)
        events = _events(client, job_id)
        final = _wait_job(client, job_id)
        kinds = [event["event"] for event in events]
        assert kinds[0] == "status" and events[0]["data"]["status"] == "queued"
        assert kinds[-2:] == ["status", "end"] and kinds.count("end") == 1
        assert [int(event["id"]) for event in events] == list(range(len(events)))
        statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
        assert statuses == ["queued", "running", "succeeded"]
        progress = [event["data"]["progress"] for event in events if event["event"] == "progress"]
        assert [p["value"] for p in progress] == list(range(1, 13)) and {p["max"] for p in progress} == {12}
        running_at = kinds.index("status", 1)
        assert events[running_at]["data"]["status"] == "running" and running_at < kinds.index("progress")
        assert events[-1]["data"] == final
        assert final["status"] == "succeeded" and final["progress"] == {"value": 12, "max": 12} and final["error"] is None
        assert len(final["images"]) == 2 and final["workflow"] == "sdxl-basic"
        for url in final["images"]:
            image = client.get(urlsplit(url).path)
            assert image.status_code == 200 and _png_size(image.content) == (320, 256)
        assert client.get(f"/api/media/images/{job_id}/2").status_code == 404
        late = _events(client, job_id)  # a listener joining after the end gets the same story
        assert [e["event"] for e in late] == kinds


def test_socket_drop_falls_back_to_history_polling(live: Bff, fake: FakeComfyUIState, user_token: str) -> None:
    with live.client(user_token) as client:
        job_id = _start(client, "[drop] a quiet harbour", steps=30)
        events = _events(client, job_id)
    run = _run_with(fake, "[drop] a quiet harbour")
    assert events[-1]["data"]["status"] == "succeeded" and len(events[-1]["data"]["images"]) == 1
    progress = [event["data"]["progress"]["value"] for event in events if event["event"] == "progress"]
    assert progress == [1, 2]  # the socket dropped after step 2; the rest came from /history
    assert fake.history_polls[run.prompt_id] >= 2  # polled while the prompt still ran


def test_execution_error_fails_the_job(live: Bff, user_token: str) -> None:
    with live.client(user_token) as client:
        sync = client.post("/v1/images/generations", json={"prompt": "[fail] a castle"})
        assert sync.status_code == 502
        assert sync.json()["error"]["code"] == "generation_failed"
        assert "node '3' (KSampler)" in sync.json()["error"]["message"] and "out of memory" in sync.json()["error"]["message"]
        job = _wait_job(client, _start(client, "[fail] a tower", steps=8))
    assert job["status"] == "failed" and job["images"] == []
    assert job["error"]["code"] == "generation_failed" and "KSampler" in job["error"]["message"]


def test_node_errors_are_400_naming_the_node(live: Bff, user_token: str) -> None:
    with live.client(user_token) as client:
        answer = client.post(
            "/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": "x", "checkpoint": "missing.safetensors"}
        )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "workflow_rejected"
    assert "node '4' (CheckpointLoaderSimple)" in error["message"] and "missing.safetensors" in error["message"]


def test_product_route_validation(live: Bff, user_token: str) -> None:
    cases = [
        ({"workflow": "nope", "prompt": "x"}, 404, "nope"),
        ({"workflow": "sdxl-basic", "task": "hero_image", "prompt": "x"}, 400, "not both"),
        ({"task": "Hero Image!", "prompt": "x"}, 400, "'task'"),
        ({"workflow": "sdxl-basic", "prompt": ""}, 400, "'prompt'"),
        ({"workflow": "sdxl-basic", "prompt": "x", "steps": 61}, 400, "'steps'"),
        ({"workflow": "sdxl-basic", "prompt": "x", "width": 2048}, 400, "'width'"),
        ({"workflow": "sdxl-basic", "prompt": "x", "height": 1001}, 400, "'height'"),
        ({"workflow": "sdxl-basic", "prompt": "x", "batch_size": 5}, 400, "'batch_size'"),
        ({"workflow": "sdxl-basic", "prompt": "x", "seed": -1}, 400, "'seed'"),
        ({"workflow": "sdxl-basic", "prompt": "x", "sampler": "euler"}, 400, "'sampler'"),
    ]
    with live.client(user_token) as client:
        for body, status, named in cases:
            answer = client.post("/api/media/image/generate", json=body)
            assert answer.status_code == status and named in answer.json()["error"]["message"], body
        assert client.get(f"/api/media/jobs/{uuid.uuid4().hex}").status_code == 404


def test_comfyui_down_is_503_while_the_mock_workflow_still_works(
    bff_factory: BffFactory, tmp_path: Path, user_token: str
) -> None:
    down = _media_bff(bff_factory, tmp_path / "media", f"http://127.0.0.1:{free_port()}")
    with down.client(user_token) as client:
        sync = client.post("/v1/images/generations", json={"model": "sdxl-basic", "prompt": "x"})
        job = client.post("/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": "x"})
        for answer in (sync, job):
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "comfyui_unavailable"
            assert "127.0.0.1" not in answer.text
        mocked = client.post("/v1/images/generations", json={"model": "mock-image", "prompt": "x", "response_format": "b64_json"})
        assert mocked.status_code == 200, mocked.text
        # the failed submissions held no job slot
        assert client.post("/api/media/image/generate", json={"workflow": "mock-image", "prompt": "y"}).status_code == 202


def test_timeouts_interrupt_or_dequeue_and_jobs_per_user_are_bounded(
    bff_factory: BffFactory, comfy: tuple[ThreadServer, FakeComfyUIState], tmp_path: Path
) -> None:
    fake = comfy[1]
    short = _media_bff(bff_factory, tmp_path / "media", comfy[0].url, comfyui_timeout_seconds=1.0)
    with _as_user(short, _fresh_user()) as client:
        running_id = _start(client, "[slow] runs too long", steps=20)
        deadline = time.monotonic() + 5
        while not fake.run_for("[slow] runs too long") or fake.running != _run_with(fake, "[slow] runs too long").prompt_id:
            assert time.monotonic() < deadline, "the slow prompt never started"
            time.sleep(0.02)
        fake.hold = True  # ComfyUI busy: the next prompt waits in its queue
        try:
            queued_id = _start(client, "[slow] waits in the queue", steps=20)
            third = client.post("/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": "one too many"})
            assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_image_jobs"
            running, queued = _wait_job(client, running_id), _wait_job(client, queued_id)
        finally:
            fake.hold = False
        for job in (running, queued):
            assert job["status"] == "timed_out" and job["error"]["code"] == "generation_timeout" and job["images"] == []
        running_run, queued_run = _run_with(fake, "[slow] runs too long"), _run_with(fake, "[slow] waits in the queue")
        assert {"prompt_id": running_run.prompt_id} in fake.interrupts
        assert queued_run.prompt_id in fake.queue_deletes and queued_run.status == "pending"
        assert {"prompt_id": queued_run.prompt_id} not in fake.interrupts

        while fake.running is not None or fake.pending:  # the interrupted prompt stops at its next step
            assert time.monotonic() < deadline + 5, "the interrupted prompt never stopped"
            time.sleep(0.02)
        sync = client.post("/v1/images/generations", json={"prompt": "[slow] synchronous"})  # the slots are free again
        assert sync.status_code == 504 and sync.json()["error"]["code"] == "generation_timeout"
        assert {"prompt_id": _run_with(fake, "[slow] synchronous").prompt_id} in fake.interrupts


# --- Access -----------------------------------------------------------------------------


def test_jobs_and_images_only_for_their_owner_or_an_admin(live: Bff, user_token: str, admin_token: str) -> None:
    with live.client(user_token) as owner:
        job_id = _start(owner, "private picture", steps=3)
        assert _wait_job(owner, job_id)["status"] == "succeeded"
    paths = [f"/api/media/jobs/{job_id}", f"/api/media/jobs/{job_id}/events", f"/api/media/images/{job_id}/0"]
    with _as_user(live, _fresh_user()) as other:
        for path in paths:
            answer = other.get(path)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "job_not_found", path
    with live.client(admin_token) as admin:
        for path in paths:
            assert admin.get(path).status_code == 200, path
    with _as_user(live, "pending-1", role="pending") as pending:
        assert pending.get(paths[0]).status_code == 403


TRAVERSAL = [
    "..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%252e%252e%252fetc",
    "/etc/passwd", "%2Fetc%2Fpasswd", "..\\..\\windows\\win.ini", "%5c..%5c..%5cwin.ini", "%00", "a%00b", "..%00",
    "x" * 4000, "....//....//etc", "0" * 31 + "g", "A" * 32, "-1", "0x1", "1e3",
]
BODY_TRAVERSAL = [
    "../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "a\x00b", "x" * 5000, "..", "sub/../../x", "C:\\Windows\\x",
]


def _raw_get(base: str, path: str, token: str) -> tuple[int, bytes]:
    """Sends the path byte for byte (HTTP clients would normalise `..`)."""
    host = urlsplit(base)
    connection = http.client.HTTPConnection(host.hostname or "", host.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {token}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_path_traversal_corpus_never_reaches_a_file(live: Bff, fake: FakeComfyUIState, user_token: str, admin_token: str) -> None:
    media = Path(live.settings.media_dir).resolve()
    secret = b"SECRET-" + uuid.uuid4().hex.encode()
    (media.parent / "0.png").write_bytes(secret)
    (media.parent / "job.json").write_bytes(secret)
    with live.client(user_token) as client:
        evil_id = _start(client, "[evil-names] innocent", batch_size=4)
        evil = _wait_job(client, evil_id)
        valid = evil_id
    assert evil["status"] == "succeeded" and len(evil["images"]) == 4
    assert sorted(p.name for p in (media / evil_id).iterdir()) == ["0.png", "1.png", "2.png", "3.png", "job.json"]
    assert any(view["filename"] == "../../etc/passwd" for view in fake.views)  # names only travelled back to ComfyUI
    outside_before = sorted(str(p) for p in media.parent.rglob("*") if media not in p.parents and p != media)

    for token in (user_token, admin_token):
        for bad in TRAVERSAL:
            for path in (
                f"/api/media/jobs/{bad}", f"/api/media/jobs/{bad}/events", f"/api/media/images/{bad}/0",
                f"/api/media/images/{valid}/{bad}", f"/api/media/images/{bad}/{bad}", f"/api/media/images/{valid}/0/{bad}",
            ):
                status, body = _raw_get(live.url, path, token)
                assert status in (400, 404), (path[:80], status)
                assert secret not in body and b"root:" not in body
    with live.client(user_token) as client:
        for bad in BODY_TRAVERSAL:
            answers = [
                client.post("/api/media/image/generate", json={"workflow": bad, "prompt": "x"}),
                client.post("/v1/images/generations", json={"model": bad, "prompt": "x"}),
                client.post("/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": "x", "checkpoint": bad}),
            ]
            for answer in answers:
                assert answer.status_code in (400, 404), (bad[:40], answer.status_code)
    outside_after = sorted(str(p) for p in media.parent.rglob("*") if media not in p.parents and p != media)
    assert outside_after == outside_before


def test_media_retention_sweeps_old_jobs_on_start(bff_factory: BffFactory, tmp_path: Path, user_token: str) -> None:
    media = tmp_path / "media"
    old_id, fresh_id = uuid.uuid4().hex, uuid.uuid4().hex
    now = time.time()
    for job_id, age_hours in ((old_id, 30), (fresh_id, 1)):
        (media / job_id).mkdir(parents=True)
        (media / job_id / "0.png").write_bytes(Image.new("RGB", (8, 8)).tobytes())
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - age_hours * 3600))
        meta = {"job_id": job_id, "owner": "user-1", "workflow": "sdxl-basic", "provider": "comfyui", "images": 1,
                "progress_max": 25, "created_at": finished, "finished_at": finished}
        (media / job_id / "job.json").write_text(json.dumps(meta))
    stray = media / "not-a-job"
    stray.mkdir()
    bff = _media_bff(bff_factory, media, f"http://127.0.0.1:{free_port()}", media_retention_hours=24)
    assert not (media / old_id).exists() and (media / fresh_id).exists() and stray.exists()
    with bff.client(user_token) as client:  # a job from before the restart is still served to its owner
        assert client.get(f"/api/media/jobs/{fresh_id}").json()["status"] == "succeeded"
        assert client.get(f"/api/media/jobs/{old_id}").status_code == 404


def test_the_periodic_sweep_forgets_expired_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bff.media import service as service_module
    from bff.media.local_jobs import LocalJobStore
    from bff.media.service import ImageService
    from bff.media.storage import MediaStore, StoredJob

    store = MediaStore(tmp_path, retention_hours=1)
    registry = LocalJobStore(max_per_user=2)
    old = datetime.now(UTC) - timedelta(hours=2)
    stored = StoredJob(job_id=uuid.uuid4().hex, owner="u", workflow="sdxl-basic", provider="comfyui", images=1,
                       progress_max=1, created_at=old, finished_at=old)
    store.save(stored, [b"png"])
    registry.restore(stored)
    monkeypatch.setattr(service_module, "SWEEP_INTERVAL_SECONDS", 0.01)
    images = ImageService(load_workflows(WORKFLOWS), {}, [], store, registry, budgets=None)  # type: ignore[arg-type]

    async def run() -> None:
        images.start_sweeper()
        await asyncio.sleep(0.2)
        await images.aclose()

    asyncio.run(run())
    assert not (tmp_path / stored.job_id).exists()
    admin = Principal(user_id="admin", role=Role.admin, auth=AuthMethod.session_token)
    with pytest.raises(ApiError):
        asyncio.run(registry.visible(stored.job_id, admin))


# --- Mock mode ------------------------------------------------------------------------------


def _shape(value: Any) -> Any:
    """Keys and types, recursively; list items must all share one shape."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes = [_shape(item) for item in value]
        assert all(shape == shapes[0] for shape in shapes)
        return [shapes[0]] if shapes else []
    return type(value).__name__


def _story(bff: Bff, token: str, workflow: str) -> dict[str, Any]:
    with bff.client(token) as client:
        b64 = client.post("/v1/images/generations", json={"model": workflow, "prompt": "shape check", "n": 2, "size": "512x512", "response_format": "b64_json"})
        url = client.post("/v1/images/generations", json={"model": workflow, "prompt": "shape check", "size": "512x512"})
        accepted = client.post("/api/media/image/generate", json={"workflow": workflow, "prompt": "shape check", "steps": 4})
        job_id = accepted.json()["job_id"]
        events = _events(client, job_id)
        job = _wait_job(client, job_id)
        image = client.get(urlsplit(job["images"][0]).path)
    assert b64.status_code == url.status_code == 200 and accepted.status_code == 202 and image.status_code == 200
    by_kind = {event["event"]: event["data"] for event in events}
    return {
        "b64": b64.json(), "url": url.json(), "accepted": accepted.json(), "job": job, "events": by_kind,
        "kinds": sorted(by_kind), "png": _png_size(base64.b64decode(b64.json()["data"][0]["b64_json"])),
        "image_type": image.headers["content-type"],
    }


def test_mock_mode_answers_in_exactly_the_live_shapes(live: Bff, mock: Bff, user_token: str) -> None:
    live_story, mock_story = _story(live, user_token, "sdxl-basic"), _story(mock, user_token, "sdxl-basic")
    for part in ("b64", "url", "accepted", "job", "events"):
        assert _shape(mock_story[part]) == _shape(live_story[part]), part
    assert mock_story["kinds"] == live_story["kinds"] == ["end", "progress", "status"]
    assert mock_story["job"]["status"] == "succeeded" and mock_story["job"]["progress"] == {"value": 4, "max": 4}
    assert live_story["png"] == (512, 512) and mock_story["png"] == (256, 256)  # the mock caps its size
    assert mock_story["image_type"] == live_story["image_type"] == "image/png"
    with mock.client(user_token) as client:
        events = _events(client, _start(client, "mock states", steps=8))
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"] and events[-1]["event"] == "end"
    assert [e["data"]["progress"]["value"] for e in events if e["event"] == "progress"] == [2, 4, 6, 8]


# --- Money and telemetry ------------------------------------------------------------------


def test_image_costs_count_against_the_budget(
    bff_factory: BffFactory, comfy: tuple[ThreadServer, FakeComfyUIState], tmp_path: Path
) -> None:
    user_id = _fresh_user()
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["budgets"]["users"] = {user_id: {"daily_usd": str(SDXL_COST * 2)}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    bff = _media_bff(bff_factory, tmp_path / "media", comfy[0].url, policy_file=tmp_path / "policy.yaml")
    with _as_user(bff, user_id) as client:
        first = client.post("/v1/images/generations", json={"prompt": "budget one", "size": "256x256"})
        assert first.status_code == 200, first.text
        assert Decimal(first.headers["x-budget-remaining-usd"]) == SDXL_COST * 2
        job = _wait_job(client, _start(client, "budget two", width=256, height=256, steps=4))  # ends its own span
        assert job["status"] == "succeeded"
        time.sleep(0.5)  # the spans reach ClickHouse; spend must not count twice or vanish
        for refused in (
            client.post("/v1/images/generations", json={"prompt": "budget three"}),
            client.post("/api/media/image/generate", json={"workflow": "sdxl-basic", "prompt": "budget three"}),
        ):
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
            assert Decimal(refused.headers["x-budget-remaining-usd"]) == 0


def _span_duration_ms(store: ClickHouseStore, request_id: str) -> float:
    rows = store.query(
        "SELECT Duration FROM otel.otel_traces WHERE SpanAttributes['gateway.request_id'] = {id:String}", {"id": request_id}
    )
    return rows[0]["Duration"] / 1e6


def test_spans_and_usage_for_images(live: Bff, mock: Bff, admin_token: str, clickhouse_url: str) -> None:
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    user_id = _fresh_user()
    sync_id, job_request_id, mock_id = (f"img-{name}-{uuid.uuid4().hex[:6]}" for name in ("sync", "job", "mock"))
    with _as_user(live, user_id) as client:
        answer = client.post("/v1/images/generations", json={"prompt": "span one", "n": 2, "size": "512x512"}, headers={"x-request-id": sync_id})
        assert answer.status_code == 200
        started = time.monotonic()
        accepted = client.post(
            "/api/media/image/generate",
            json={"workflow": "sdxl-basic", "prompt": "span two", "steps": 40, "width": 256, "height": 256},
            headers={"x-request-id": job_request_id},
        )
        accepted_ms = (time.monotonic() - started) * 1000
        assert accepted.status_code == 202
        assert _wait_job(client, accepted.json()["job_id"])["status"] == "succeeded"
    with _as_user(mock, user_id) as client:
        assert client.post("/v1/images/generations", json={"model": "mock-image", "prompt": "m"}, headers={"x-request-id": mock_id}).status_code == 200

    sync_span, job_span, mock_span = (spans_for(store, rid) for rid in (sync_id, job_request_id, mock_id))
    assert len(sync_span) == len(job_span) == len(mock_span) == 1
    attributes = sync_span[0]["SpanAttributes"]
    assert sync_span[0]["SpanName"] == "gateway images"
    assert attributes["gateway.operation"] == "images" and attributes["gateway.route"] == "/v1/images/generations"
    assert attributes["gen_ai.request.model"] == "sdxl-basic" and attributes["gen_ai.provider.name"] == "comfyui"
    assert attributes["gateway.images.workflow"] == "sdxl-basic" and attributes["gateway.images.count"] == "2"
    assert attributes["gateway.images.size"] == "512x512" and attributes["gateway.images.steps"] == "25"
    assert Decimal(attributes["gateway.cost.usd"]) == SDXL_COST * 2 and attributes["enduser.id"] == user_id
    job_attributes = job_span[0]["SpanAttributes"]
    assert job_attributes["gateway.route"] == "/api/media/image/generate" and job_attributes["http.response.status_code"] == "202"
    assert job_attributes["gateway.images.steps"] == "40" and job_attributes["gateway.images.count"] == "1"
    assert Decimal(job_attributes["gateway.cost.usd"]) == SDXL_COST
    assert _span_duration_ms(store, job_request_id) >= 40 * 10 > accepted_ms  # the span covers the generation
    assert mock_span[0]["SpanAttributes"]["gen_ai.provider.name"] == "mock"

    with live.client(admin_token) as admin:
        deadline = time.monotonic() + 15
        while True:
            rows = admin.get("/api/usage/breakdown", params={"by": "model", "user": user_id}).json()["rows"]
            by_model = {row["key"]: row for row in rows}
            if ("sdxl-basic" in by_model and by_model["sdxl-basic"]["cost_usd"] >= float(SDXL_COST * 3)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert by_model["sdxl-basic"]["requests"] == 2
    assert Decimal(str(by_model["sdxl-basic"]["cost_usd"])) == SDXL_COST * 3
    assert Decimal(str(by_model["mock-image"]["cost_usd"])) == Decimal("0.0001")


# --- LiteLLM image models ------------------------------------------------------------------

LITELLM_IMAGE = "fake-image"  # mode image_generation, tier mini
IMAGE_PRICE = Decimal("0.04")  # its output_cost_per_image
LITELLM_FIXTURE = ROOT / "tests" / "fixtures" / "litellm.test.yaml"


def _fixture_models() -> dict[str, dict[str, Any]]:
    return {item["model_name"]: item for item in yaml.safe_load(LITELLM_FIXTURE.read_text())["model_list"]}


def _sent_to_provider(provider: FakeProviderState, prompt: str) -> list[dict[str, Any]]:
    return [body for body in provider.bodies_at("images/generations") if body.get("prompt") == prompt]


def _direct_cost(litellm_url: str, n: int) -> Decimal:
    """What LiteLLM itself charges for n images of the model, asked with the master key."""
    answer = httpx.post(
        f"{litellm_url}/v1/images/generations",
        json={"model": LITELLM_IMAGE, "prompt": "priced directly", "n": n},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return Decimal(answer.headers["x-litellm-response-cost"])


def _policy_file(tmp_path: Path, change: Any) -> Path:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    change(policy)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def test_a_litellm_image_model_runs_as_a_job(
    live: Bff, provider_state: FakeProviderState, litellm_url: str, admin_token: str, clickhouse_url: str
) -> None:
    user_id, request_id = _fresh_user(), f"img-litellm-{uuid.uuid4().hex[:6]}"
    prompt = f"a lighthouse from litellm {uuid.uuid4().hex[:6]}"
    with _as_user(live, user_id) as client:
        accepted = client.post(
            "/api/media/image/generate",
            json={"workflow": LITELLM_IMAGE, "prompt": prompt, "batch_size": 2, "width": 512, "height": 768},
            headers={"x-request-id": request_id},
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "queued"
        job_id = accepted.json()["job_id"]
        events = _events(client, job_id)
        job = _wait_job(client, job_id)
        assert job["status"] == "succeeded" and job["error"] is None, job
        assert job["workflow"] == LITELLM_IMAGE and job["progress"] == {"value": 1, "max": 1} and len(job["images"]) == 2
        assert [e["data"]["status"] for e in events if e["event"] == "status"] == ["queued", "running", "succeeded"]
        assert [e["data"]["progress"] for e in events if e["event"] == "progress"] == [{"value": 1, "max": 1}]
        assert events[-1]["event"] == "end" and events[-1]["data"] == job
        for url in job["images"]:
            image = client.get(urlsplit(url).path)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert _png_size(image.content) == (1, 1)  # the fake provider's PNG, stored as it came
        assert client.get(f"/api/media/images/{job_id}/2").status_code == 404

    # LiteLLM got what the pipeline sends: the caller as `user`, n, size. The test LiteLLM has no
    # drop_params and takes fake-image for a gpt-image model, so it refused `response_format` and
    # the job sent the call once more without it (gpt-image always answers b64).
    [sent] = _sent_to_provider(provider_state, prompt)
    assert (sent["user"], sent["n"], sent["size"], sent["model"]) == (user_id, 2, "512x768", LITELLM_IMAGE)
    assert "response_format" not in sent

    paths = [f"/api/media/jobs/{job_id}", f"/api/media/jobs/{job_id}/events", *(urlsplit(url).path for url in job["images"])]
    with _as_user(live, _fresh_user()) as other:
        for path in paths:
            answer = other.get(path)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "job_not_found", path
    with live.client(admin_token) as admin:
        assert all(admin.get(path).status_code == 200 for path in paths)
        stored = _wait_for_request(admin, request_id)
    assert stored.status_code == 200, stored.text

    charged = _direct_cost(litellm_url, 2)
    assert charged == IMAGE_PRICE * 2
    row = stored.json()["request"]
    assert (row["user_id"], row["operation"], row["route"], row["status"]) == (user_id, "images", "/api/media/image/generate", 202)
    assert (row["requested_model"], row["model"], row["provider"]) == (LITELLM_IMAGE, LITELLM_IMAGE, "openai")
    assert row["deployment_id"] and row["outcome"] == "completed" and not row["cost_estimated"]
    assert Decimal(str(row["cost_usd"])) == charged

    [span] = spans_for(ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse"), request_id)
    attributes = span["SpanAttributes"]
    assert span["SpanName"] == "gateway images" and attributes["gateway.operation"] == "images"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == LITELLM_IMAGE
    assert attributes["gen_ai.provider.name"] == "openai" and attributes["enduser.id"] == user_id
    assert attributes["gateway.images.count"] == "2" and attributes["gateway.images.size"] == "512x768"
    assert "gateway.images.workflow" not in attributes and "gateway.images.steps" not in attributes
    assert Decimal(attributes["gateway.cost.usd"]) == charged


def test_a_litellm_image_model_on_the_openai_route(live: Bff, provider_state: FakeProviderState, admin_token: str) -> None:
    user_id, prompt = _fresh_user(), f"an openai-shaped answer {uuid.uuid4().hex[:6]}"
    with _as_user(live, user_id) as client:
        identity = {"X-OpenWebUI-User-Jwt": client.headers["X-OpenWebUI-User-Jwt"]}
    sdk = OpenAI(base_url=f"{live.url}/v1", api_key=SERVICE_KEY, default_headers=identity, max_retries=0)
    raw = sdk.images.with_raw_response.generate(model=LITELLM_IMAGE, prompt=prompt, n=2, size="512x512")
    answer = raw.parse()
    assert raw.status_code == 200 and answer.created > 0 and len(answer.data) == 2
    assert all(_png_size(base64.b64decode(item.b64_json or "")) == (1, 1) for item in answer.data)
    [sent] = _sent_to_provider(provider_state, prompt)
    assert (sent["user"], sent["n"], sent["size"]) == (user_id, 2, "512x512")
    with live.client(admin_token) as admin:
        stored = _wait_for_request(admin, raw.headers["x-request-id"])
    assert stored.status_code == 200, stored.text
    row = stored.json()["request"]
    assert (row["user_id"], row["operation"], row["model"], row["status"]) == (user_id, "images", LITELLM_IMAGE, 200)
    assert Decimal(str(row["cost_usd"])) == Decimal(raw.headers["x-litellm-response-cost"]) == IMAGE_PRICE * 2


def test_litellm_image_models_are_judged_by_the_policy(
    bff_factory: BffFactory, provider_state: FakeProviderState, tmp_path: Path, admin_token: str
) -> None:
    def exclude(policy: dict[str, Any]) -> None:
        policy["roles"]["user"]["models"]["exclude"] = [LITELLM_IMAGE]

    bff = bff_factory(policy_file=_policy_file(tmp_path, exclude), media_dir=tmp_path / "media")
    prompt = f"not for users {uuid.uuid4().hex[:6]}"
    with _as_user(bff, _fresh_user()) as client:
        for answer in (
            client.post("/api/media/image/generate", json={"workflow": LITELLM_IMAGE, "prompt": prompt}),
            client.post("/v1/images/generations", json={"model": LITELLM_IMAGE, "prompt": prompt}),
        ):
            assert answer.status_code == 403, answer.text
            error = answer.json()["error"]
            assert error["code"] == "model_not_allowed" and f"'{LITELLM_IMAGE}'" in error["message"]
    assert _sent_to_provider(provider_state, prompt) == []
    with bff.client(admin_token) as admin:  # admins may use every model
        assert _wait_job(admin, _start(admin, prompt, workflow=LITELLM_IMAGE))["status"] == "succeeded"

    # Image models outside the user role's tiers in the fixtures (fake-image-advanced)
    user_tiers = set(yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())["roles"]["user"]["models"]["tiers"])
    premium = [
        name for name, item in _fixture_models().items()
        if (item.get("model_info") or {}).get("mode") == "image_generation"
        and (item.get("model_info") or {}).get("gateway_tier") not in user_tiers
    ]
    assert premium, "the test LiteLLM config needs an image model outside the user role's tiers"
    default = bff_factory(media_dir=tmp_path / "media-default")
    with _as_user(default, _fresh_user()) as client:
        for name in premium:
            answer = client.post("/api/media/image/generate", json={"workflow": name, "prompt": prompt})
            assert answer.status_code == 403 and f"'{name}'" in answer.json()["error"]["message"], name


def test_litellm_image_costs_count_against_the_budget(bff_factory: BffFactory, tmp_path: Path) -> None:
    user_id = _fresh_user()

    def limit(policy: dict[str, Any]) -> None:
        policy["budgets"]["users"] = {user_id: {"daily_usd": str(IMAGE_PRICE)}}

    bff = bff_factory(policy_file=_policy_file(tmp_path, limit), media_dir=tmp_path / "media")
    with _as_user(bff, user_id) as client:
        assert _wait_job(client, _start(client, "one priced image", workflow=LITELLM_IMAGE))["status"] == "succeeded"
        time.sleep(0.5)  # the span reaches ClickHouse; the spend must not count twice or vanish
        for refused in (
            client.post("/api/media/image/generate", json={"workflow": LITELLM_IMAGE, "prompt": "over budget"}),
            client.post("/v1/images/generations", json={"model": LITELLM_IMAGE, "prompt": "over budget"}),
        ):
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
            assert Decimal(refused.headers["x-budget-remaining-usd"]) == 0


def test_litellm_image_model_parameters_and_modes(live: Bff, user_token: str) -> None:
    cases = [
        ({"steps": 10}, 400, "'steps'"),
        ({"seed": 3}, 400, "'seed'"),
        ({"negative_prompt": "blur"}, 400, "'negative_prompt'"),
        ({"checkpoint": "x.safetensors"}, 400, "'checkpoint'"),
        ({"width": 512}, 400, "'height'"),
        ({"height": 512}, 400, "'width'"),
        ({"width": 8192, "height": 512}, 400, "'width'"),
        ({"batch_size": 11}, 400, "'batch_size'"),
        ({"workflow": "fake-mini"}, 400, "chat model"),
        ({"workflow": "fake-embed"}, 400, "embedding model"),
        ({"workflow": "fake-image-edit"}, 400, "POST /v1/images/edits"),
        ({"workflow": "no-such-image-model"}, 404, "'no-such-image-model'"),
    ]
    with live.client(user_token) as client:
        for change, status, named in cases:
            answer = client.post("/api/media/image/generate", json={"workflow": LITELLM_IMAGE, "prompt": "x", **change})
            assert answer.status_code == status and named in answer.json()["error"]["message"], (change, answer.text)
        default = _wait_job(client, _start(client, f"default size {uuid.uuid4().hex[:6]}", workflow=LITELLM_IMAGE))
    assert default["status"] == "succeeded" and len(default["images"]) == 1


def test_litellm_image_job_past_its_timeout_ends_timed_out(bff_factory: BffFactory, tmp_path: Path) -> None:
    short = bff_factory(upstream_timeout_seconds=0.001, media_dir=tmp_path / "media")
    with _as_user(short, _fresh_user()) as client:
        job = _wait_job(client, _start(client, "too slow for the gateway", workflow=LITELLM_IMAGE))
    assert job["status"] == "timed_out" and job["images"] == []
    assert job["error"]["status"] == 504 and job["error"]["code"] == "generation_timeout"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("fake-image-broken", 502, "bad_gateway"), ("fake-image-ratelimited", 429, "rate_limit_exceeded")],
)
def test_litellm_errors_fail_the_job(live: Bff, user_token: str, model: str, status: int, code: str) -> None:
    with live.client(user_token) as client:
        job = _wait_job(client, _start(client, f"failing {model}", workflow=model))
    assert job["status"] == "failed" and job["images"] == []
    assert (job["error"]["status"], job["error"]["code"]) == (status, code)
