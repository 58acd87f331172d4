"""The Open-WebUI functions in webui-integration/functions/, loaded and called as Open-WebUI 0.12.4 does.

Each file is exec'd into a fresh module (tests/support/openwebui_functions.py mirrors
Open-WebUI's loader), its valves are set, and it is called with a realistic `__user__`
and a collecting `__event_emitter__` against real BFFs: a live one in front of the
loopback ComfyUI, a mock-mode one, and ones with changed policies.
"""

import ast
import asyncio
import base64
import io
import sys
import time
import types
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from jose import jwt
from PIL import Image

from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, Bff, BffFactory, chat_body
from support.fake_comfyui import FakeComfyUIState, create_fake_comfyui
from support.openwebui_functions import (
    EventLog,
    call_action,
    call_tool,
    load,
    openwebui_user,
    replace_imports,
    set_valves,
    tool_specs,
)
from support.servers import ThreadServer, free_port
from test_usage import _as_user

FUNCTIONS = ROOT / "webui-integration" / "functions"
TOOL_FILE = FUNCTIONS / "comfyui_workflow_tool.py"
ACTION_FILE = FUNCTIONS / "gateway_usage_action.py"
WRONG_KEY = "svc-wrong-service-key-9876543210"
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _policy(tmp_path: Path, change: dict[str, Any]) -> Path:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    for section, value in change.items():
        policy[section].update(value)
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def _valves(bff_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "BFF_URL": bff_url,
        "BFF_SERVICE_KEY": SERVICE_KEY,
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": FORWARD_SECRET,
        "PROGRESS_INTERVAL_SECONDS": 0,
        "WORKFLOWS": "sdxl-basic, mock-image",
        **overrides,
    }


def _tool(bff: Bff, **valves: Any) -> Any:
    tool, kind, _ = load(TOOL_FILE)
    assert kind == "tool"
    set_valves(tool, _valves(bff.url, **valves))
    return tool


def _action(bff: Bff, **valves: Any) -> Any:
    action, kind, _ = load(ACTION_FILE)
    assert kind == "action"
    set_valves(action, {key: value for key, value in _valves(bff.url, **valves).items() if key in action.Valves.model_fields})
    return action


def _generate(tool: Any, user: dict[str, Any], arguments: dict[str, Any], **extra: Any) -> tuple[str, EventLog]:
    events = EventLog()
    extras = {"__user__": user, "__event_emitter__": events, "__metadata__": {}, "__request__": None, "__id__": "comfyui", **extra}
    result = run(call_tool(tool, "run_image_workflow", arguments, extras))
    return result, events


def _png(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return image.size


@pytest.fixture(scope="module")
def comfy() -> Iterator[ThreadServer]:
    server = ThreadServer(create_fake_comfyui(FakeComfyUIState())).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live(bff_factory: BffFactory, comfy: ThreadServer, tmp_path_factory: pytest.TempPathFactory) -> Bff:
    return bff_factory(
        media_dir=tmp_path_factory.mktemp("owui-live") / "media",
        comfyui_url=comfy.url,
        comfyui_timeout_seconds=10.0,
        comfyui_poll_interval_seconds=0.05,
    )


@pytest.fixture(scope="module", name="mock")
def mock_bff(bff_factory: BffFactory, tmp_path_factory: pytest.TempPathFactory) -> Bff:
    """A BFF whose image workflows are the mock backend (no ComfyUI); also used by tests/openwebui."""
    return bff_factory(
        media_dir=tmp_path_factory.mktemp("owui-mock") / "media",
        comfyui_url=f"http://127.0.0.1:{free_port()}",
        generator_mode="mock",
        budget_cache_seconds=0,
    )


# --- Loading, as Open-WebUI does -------------------------------------------------------------


def test_files_load_as_open_webui_functions_with_frontmatter_and_valves() -> None:
    tool, kind, front = load(TOOL_FILE)
    assert kind == "tool" and {"title", "version", "description"} <= front.keys() and "requirements" not in front
    action, kind, front = load(ACTION_FILE)
    assert kind == "action" and {"title", "version", "description", "icon_url"} <= front.keys() and "requirements" not in front
    assert front["icon_url"].startswith("data:image/svg+xml;base64,")
    for instance in (tool, action):
        schema = instance.Valves.model_json_schema()["properties"]
        assert schema["BFF_URL"]["default"] == "http://bff:8080"
        for secret in ("BFF_SERVICE_KEY", "FORWARD_USER_INFO_HEADER_JWT_SECRET"):
            assert schema[secret]["input"] == {"type": "password"} and schema[secret]["default"] == ""


def test_function_files_need_nothing_open_webui_lacks() -> None:
    """Only the standard library, httpx and pydantic (both pinned by open-webui 0.12.4); open_webui lazily."""
    for path in (TOOL_FILE, ACTION_FILE):
        assert replace_imports(path.read_text()) == path.read_text()  # Open-WebUI's rewrite must not touch them
        tree = ast.parse(path.read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
        assert top - set(sys.stdlib_module_names) <= {"httpx", "pydantic"}, path.name


def test_tool_spec_is_what_the_model_sees() -> None:
    tool, _, _ = load(TOOL_FILE)
    (spec,) = tool_specs(tool)
    assert spec["name"] == "run_image_workflow" and "ComfyUI workflow" in spec["description"]
    properties = spec["parameters"]["properties"]
    assert set(properties) == {"prompt", "workflow", "negative_prompt", "width", "height", "steps", "seed", "batch_size"}
    assert spec["parameters"]["required"] == ["prompt"]
    assert all(value.get("description") for value in properties.values())


def test_user_token_is_the_one_open_webui_mints() -> None:
    tool, _, _ = load(TOOL_FILE)
    mint = type(tool).run_image_workflow.__globals__["mint_user_jwt"]
    user = openwebui_user("jwt-1", "admin", name="Zoë")
    token = mint(user, FORWARD_SECRET, 60)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, FORWARD_SECRET, algorithms=["HS256"], issuer="open-webui")
    assert {key: claims[key] for key in ("sub", "email", "name", "role", "iss")} == {
        "sub": "jwt-1", "email": "jwt-1@example.test", "name": "Zoë", "role": "admin", "iss": "open-webui"
    }
    assert claims["exp"] - claims["iat"] == 60 and set(claims) == {"sub", "email", "name", "role", "iss", "iat", "exp"}


# --- The ComfyUI workflow tool -------------------------------------------------------------


def test_tool_shows_progress_in_order_then_the_image(live: Bff) -> None:
    user = openwebui_user(_fresh("tool"))
    result, events = _generate(_tool(live), user, {"prompt": "a lighthouse at dusk", "steps": 12, "width": 320, "height": 256})
    statuses = events.statuses()
    assert statuses[0] == "Starting workflow sdxl-basic"
    assert statuses[1:3] == ["sdxl-basic: queued", "sdxl-basic: running"]
    assert statuses[3:15] == [f"sdxl-basic: step {step}/12" for step in range(1, 13)]
    assert statuses[-1] == "Generated 1 image with sdxl-basic" and len(statuses) == 16
    assert events.of("status")[-1]["done"] is True
    assert not any(status["done"] for status in events.of("status")[:-1])
    (files,) = events.of("files")
    assert [file["type"] for file in files["files"]] == ["image"] and _png(files["files"][0]["url"]) == (320, 256)
    assert events.events[-2]["type"] == "files"  # the image, then the final status
    assert "already visible to the user" in result
    job_id = result.split("(job ")[1].split(")")[0]
    with _as_user(live, user["id"]) as owner, _as_user(live, _fresh("other")) as other:
        job = owner.get(f"/api/media/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["progress"] == {"value": 12, "max": 12}
        assert other.get(f"/api/media/jobs/{job_id}").status_code == 404  # the job belongs to the calling user


def test_tool_in_mock_mode_shows_every_image_and_throttles_progress(mock: Bff) -> None:
    result, events = _generate(
        _tool(mock, PROGRESS_INTERVAL_SECONDS=60), openwebui_user(_fresh("mock")), {"prompt": "two foxes", "workflow": "mock-image", "batch_size": 2, "width": 128, "height": 96}
    )
    (files,) = events.of("files")
    assert [_png(file["url"]) for file in files["files"]] == [(128, 96), (128, 96)]
    steps = [status for status in events.statuses() if ": step " in status]
    assert len(steps) == 1  # one update per PROGRESS_INTERVAL_SECONDS
    assert "Generated 2 images with the workflow mock-image" in result


def test_tool_reads_open_webui_environment_when_valves_are_empty(mock: Bff, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SERVICE_KEY)
    monkeypatch.setenv("FORWARD_USER_INFO_HEADER_JWT_SECRET", FORWARD_SECRET)
    tool = _tool(mock, BFF_SERVICE_KEY="", FORWARD_USER_INFO_HEADER_JWT_SECRET="")
    result, events = _generate(tool, openwebui_user(_fresh("env")), {"prompt": "a cat", "workflow": "mock-image"})
    assert "Generated 1 image" in result and len(events.of("files")) == 1


def _refusal(result: str, events: EventLog, *expected: str) -> None:
    final = events.of("status")[-1]
    assert final["done"] is True and not events.of("files")
    for part in expected:
        assert part in final["description"] and part in result
    for secret in (SERVICE_KEY, WRONG_KEY, FORWARD_SECRET, "Traceback", "Exception"):
        assert secret not in events.text() and secret not in result


def test_pending_user_gets_a_readable_refusal(mock: Bff) -> None:
    result, events = _generate(_tool(mock), openwebui_user(_fresh("pend"), "pending"), {"prompt": "x", "workflow": "mock-image"})
    _refusal(result, events, "The LLM gateway refused: your Open-WebUI account is pending approval.")


def test_missing_images_permission_gets_a_readable_refusal(bff_factory: BffFactory, tmp_path: Path) -> None:
    no_images = bff_factory(
        policy_file=_policy(tmp_path, {"roles": {"user": {"permissions": ["chat"], "models": {"tiers": ["mini"]}}}}),
        media_dir=tmp_path / "media",
        generator_mode="mock",
    )
    result, events = _generate(_tool(no_images), openwebui_user(_fresh("noimg")), {"prompt": "x", "workflow": "mock-image"})
    _refusal(result, events, "role 'user' lacks the 'images' permission")


def test_wrong_service_key_is_explained_without_the_key(mock: Bff) -> None:
    result, events = _generate(_tool(mock, BFF_SERVICE_KEY=WRONG_KEY), openwebui_user(_fresh("key")), {"prompt": "x", "workflow": "mock-image"})
    _refusal(result, events, "did not accept this tool's credentials", "BFF_SERVICE_KEY")


def test_wrong_jwt_secret_is_explained(mock: Bff) -> None:
    tool = _tool(mock, FORWARD_USER_INFO_HEADER_JWT_SECRET="not-the-shared-secret")
    result, events = _generate(tool, openwebui_user(_fresh("sec")), {"prompt": "x", "workflow": "mock-image"})
    _refusal(result, events, "did not accept this tool's credentials (invalid token)")


def test_unconfigured_unknown_and_unreachable_are_explained(mock: Bff, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("FORWARD_USER_INFO_HEADER_JWT_SECRET", raising=False)
    user = openwebui_user(_fresh("cfg"))
    result, events = _generate(_tool(mock, BFF_SERVICE_KEY=""), user, {"prompt": "x"})
    _refusal(result, events, "The tool is not configured")
    result, events = _generate(_tool(mock, WORKFLOWS="sdxl-basic"), user, {"prompt": "x", "workflow": "mock-image"})
    _refusal(result, events, "Unknown image workflow 'mock-image'. Available: sdxl-basic.")
    result, events = _generate(_tool(mock, WORKFLOWS="no-such-flow"), user, {"prompt": "x"})
    _refusal(result, events, "no image workflow or LiteLLM image model 'no-such-flow'")  # the BFF's 404, passed on
    result, events = _generate(_tool(mock, BFF_URL=f"http://127.0.0.1:{free_port()}"), user, {"prompt": "x"})
    _refusal(result, events, "cannot be reached")
    result, events = _generate(_tool(mock), user, {"prompt": "x", "workflow": "mock-image", "width": 5000})
    _refusal(result, events, "invalid field 'width'")


def test_failed_job_and_budget_exceeded_are_explained(live: Bff, bff_factory: BffFactory, tmp_path: Path) -> None:
    result, events = _generate(_tool(live), openwebui_user(_fresh("fail")), {"prompt": "[fail] a storm", "steps": 4})
    _refusal(result, events, "The workflow sdxl-basic failed:")
    assert any(": step " in status for status in events.statuses())  # progress shown before the failure

    user_id = _fresh("broke")
    tight = bff_factory(
        policy_file=_policy(tmp_path, {"budgets": {"users": {user_id: {"daily_usd": "0.001"}}}}),
        media_dir=tmp_path / "media",
        generator_mode="mock",
        budget_cache_seconds=0,
    )
    tool = _tool(tight)
    first, _ = _generate(tool, openwebui_user(user_id), {"prompt": "a coin"})  # sdxl-basic costs $0.004 an image
    assert "Generated 1 image" in first
    result, events = _generate(tool, openwebui_user(user_id), {"prompt": "another coin"})
    _refusal(result, events, "Not now: your daily budget of $0.001 is used up")


def test_broken_event_stream_falls_back_to_polling(mock: Bff, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _tool(mock)
    gateway = type(tool).run_image_workflow.__globals__["_Gateway"]
    original = gateway.events

    async def breaks_after_one(self: Any, job_id: str) -> Any:
        async for item in original(self, job_id):
            yield item
            raise httpx.ReadError("connection reset")

    monkeypatch.setattr(gateway, "events", breaks_after_one)
    result, events = _generate(tool, openwebui_user(_fresh("drop")), {"prompt": "a bridge", "workflow": "mock-image"})
    assert "Generated 1 image" in result and len(events.of("files")) == 1


def _fake_open_webui(monkeypatch: pytest.MonkeyPatch, stored: list[dict[str, Any]], fail: bool = False) -> None:
    """Stand-ins for the two Open-WebUI helpers the tool uses to keep images in Open-WebUI's file store."""

    class UserModel:
        def __init__(self, **fields: Any):
            self.id = fields["id"]

    async def get_file_url_from_base64(request: Any, data: str, metadata: dict[str, Any], user: UserModel) -> str:
        if fail:
            raise OSError("disk full")
        stored.append({"request": request, "data": data, "metadata": metadata, "user": user.id})
        return "/api/v1/files/file-1/content"

    users = types.ModuleType("open_webui.models.users")
    users.UserModel = UserModel  # type: ignore[attr-defined]
    files = types.ModuleType("open_webui.utils.files")
    files.get_file_url_from_base64 = get_file_url_from_base64  # type: ignore[attr-defined]
    for name, module in {
        "open_webui": types.ModuleType("open_webui"),
        "open_webui.models": types.ModuleType("open_webui.models"),
        "open_webui.utils": types.ModuleType("open_webui.utils"),
        "open_webui.models.users": users,
        "open_webui.utils.files": files,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_images_of_saved_chats_go_to_open_webui_file_store(mock: Bff, monkeypatch: pytest.MonkeyPatch) -> None:
    stored: list[dict[str, Any]] = []
    _fake_open_webui(monkeypatch, stored)
    user = openwebui_user(_fresh("store"))
    request = object()
    metadata = {"chat_id": "chat-1", "message_id": "msg-1", "session_id": "sess-1", "user_id": user["id"]}
    _, events = _generate(_tool(mock), user, {"prompt": "a tree", "workflow": "mock-image"}, __request__=request, __metadata__=metadata)
    assert events.of("files")[0]["files"] == [{"type": "image", "url": "/api/v1/files/file-1/content"}]
    (call,) = stored
    assert call["request"] is request and call["user"] == user["id"] and call["data"].startswith("data:image/png;base64,")
    assert call["metadata"] == {"chat_id": "chat-1", "message_id": "msg-1", "session_id": "sess-1"}

    _, events = _generate(_tool(mock), user, {"prompt": "a tree", "workflow": "mock-image"}, __request__=request,
                          __metadata__={**metadata, "chat_id": "local:abc"})
    assert _png(events.of("files")[0]["files"][0]["url"])  # temporary chats keep the image inline, as Open-WebUI does
    _fake_open_webui(monkeypatch, stored, fail=True)
    _, events = _generate(_tool(mock), user, {"prompt": "a tree", "workflow": "mock-image"}, __request__=request, __metadata__=metadata)
    assert _png(events.of("files")[0]["files"][0]["url"]) and len(stored) == 1  # storage failed: still shown inline


# --- The usage action ---------------------------------------------------------------------


ANSWER = "Hello! How can I help?"


def _click(action: Any, user: dict[str, Any], answer: str = ANSWER) -> tuple[dict[str, Any] | None, EventLog]:
    """The button under an answer, with the body Open-WebUI's chatActionHandler sends."""
    events = EventLog()
    messages = [{"id": "msg-0", "role": "user", "content": "Hi"}, {"id": "msg-1", "role": "assistant", "content": answer}]
    body = {"model": "fake-mini", "messages": messages, "chat_id": "chat-1", "session_id": "sess-1", "id": "msg-1"}
    extras = {"__user__": user, "__event_emitter__": events, "__id__": "gateway_usage", "__model__": {"id": "fake-mini"}}
    return run(call_action(action, body, extras)), events


def _new_content(result: dict[str, Any] | None) -> str:
    """What the browser puts into the clicked message (content, and the text of its structured output)."""
    assert result is not None
    (message,) = result["messages"]
    assert message["id"] == "msg-1"
    return message["content"]


def _wait_requests(client: httpx.Client, requests: int) -> dict[str, Any]:
    for _ in range(75):
        summary = client.get("/api/usage/summary").json()
        if summary["totals"]["requests"] >= requests:
            return summary
        time.sleep(0.2)
    raise AssertionError("usage did not arrive")


def test_usage_action_shows_what_the_usage_api_says(mock: Bff) -> None:
    user_id = _fresh("usage")
    with _as_user(mock, user_id) as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        _wait_requests(client, 3)
    chat_id = _fresh("chat")
    _generate(_tool(mock), openwebui_user(user_id), {"prompt": "a receipt", "workflow": "mock-image"}, __metadata__={"chat_id": chat_id})
    with _as_user(mock, user_id) as client:
        _wait_requests(client, 4)
        assert client.get(f"/api/usage/sessions/{chat_id}").json()["totals"]["requests"] == 1  # the image, in its chat
        result, events = _click(_action(mock), openwebui_user(user_id))
        summary = client.get("/api/usage/summary", params=_day_range()).json()["totals"]
        budget = client.get("/api/usage/budget").json()
    usd = _usd()
    text = _new_content(result)
    assert text.startswith(f"{ANSWER}\n\n**Your LLM gateway usage** (UTC)\n")
    assert summary["requests"] == 4 and summary["total_tokens"] > 0
    row = f"| today | {usd(summary['cost_usd'])} | {summary['total_tokens']:,} | {summary['requests']:,} |"
    assert row in text and row.replace("| today |", "| this month |") in text
    daily, monthly = ({p["period"]: p for p in budget["periods"]}[name] for name in ("daily", "monthly"))
    assert f"- daily: {usd(daily['remaining_usd'])} of $5.00 (spent {usd(daily['spent_usd'])}, resets " in text
    assert f"- monthly: {usd(monthly['remaining_usd'])} of $50.00 (spent {usd(monthly['spent_usd'])}" in text
    assert float(daily["spent_usd"]) == pytest.approx(summary["cost_usd"])
    assert events.statuses() == ["Loading your gateway usage", "Gateway usage loaded"] and not events.of("message")
    again, _ = _click(_action(mock), openwebui_user(user_id), answer=text)
    assert _new_content(again) == text  # a second click refreshes the block instead of adding one


def _day_range() -> dict[str, str]:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}


def _usd() -> Any:
    action, _, _ = load(ACTION_FILE)
    return type(action).action.__globals__["usd"]


def test_usd_formatting() -> None:
    usd = _usd()
    assert [usd(v) for v in (0, 0.000034, "0.0001", "0.001", 0.0123, "4.99997", 1234.5, "-0.5")] == [
        "$0.00", "$0.000034", "$0.0001", "$0.001", "$0.01", "$5.00", "$1,234.50", "$-0.50"
    ]


def test_usage_action_for_an_admin_says_no_limit(mock: Bff) -> None:
    result, _ = _click(_action(mock), openwebui_user(_fresh("boss"), "admin"))
    text = _new_content(result)
    assert "| today | $0.00 | 0 | 0 |" in text and text.endswith("**Budget:** no limit")  # own usage, not everyone's


def test_usage_action_without_the_clicked_message_appends_by_event(mock: Bff) -> None:
    events = EventLog()
    body = {"model": "fake-mini", "messages": [], "chat_id": "chat-1", "id": "msg-1"}
    extras = {"__user__": openwebui_user(_fresh("bare")), "__event_emitter__": events}
    assert run(call_action(_action(mock), body, extras)) is None
    (message,) = events.of("message")
    assert message["content"].startswith("\n\n**Your LLM gateway usage** (UTC)")


@pytest.mark.parametrize(
    ("role", "valves", "expected"),
    [
        ("pending", {}, "The LLM gateway refused: your Open-WebUI account is pending approval."),
        ("user", {"BFF_SERVICE_KEY": WRONG_KEY}, "did not accept this function's credentials"),
        ("user", {"BFF_URL": "http://127.0.0.1:9"}, "cannot be reached"),
    ],
    ids=["pending", "wrong key", "unreachable"],
)
def test_usage_action_failures_are_readable(mock: Bff, role: str, valves: dict[str, Any], expected: str) -> None:
    result, events = _click(_action(mock, **valves), openwebui_user(_fresh("fail"), role))
    assert result is None and not events.of("message")
    final = events.of("status")[-1]
    assert final["done"] is True and expected in final["description"]
    for secret in (SERVICE_KEY, WRONG_KEY, FORWARD_SECRET, "Traceback"):
        assert secret not in events.text()
