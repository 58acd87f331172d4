"""Task routing (config/routing.yaml, env overrides, modes) and POST /api/llm/generate."""

from pathlib import Path
from typing import Any

import pytest

from bff.policy.routing import load_router
from conftest import ROOT, Bff, BffFactory
from support.fake_openai import REPLY, FakeProviderState

ROUTING = ROOT / "tests" / "fixtures" / "routing.test.yaml"


def _generate(bff: Bff, token: str, **body: Any) -> Any:
    with bff.client(token) as client:
        return client.post("/api/llm/generate", json=body)


def test_task_picks_the_model_and_answers_in_the_product_shape(bff: Bff, user_token: str, provider_state: FakeProviderState) -> None:
    answer = _generate(bff, user_token, task="brief", prompt="Write a brief", system="Be short")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["task"] == "brief" and body["mode"] == "live"
    assert body["requested_model"] == "cheap" and body["model"] == "fake-mini"  # the alias, reported as its group
    assert body["content"] == REPLY and body["cost"]["total_cost"] > 0
    assert provider_state.requests[-1]["messages"] == [
        {"role": "system", "content": "Be short"},
        {"role": "user", "content": "Write a brief"},
    ]
    assert provider_state.requests[-1]["user"] == "user-1"


def test_unknown_task_uses_the_default(bff: Bff, user_token: str) -> None:
    answer = _generate(bff, user_token, task="translate", messages=[{"role": "user", "content": "hi"}])
    assert answer.status_code == 200 and answer.json()["requested_model"] == "fake-mini"


def test_policy_still_decides(bff: Bff, user_token: str, admin_token: str) -> None:
    refused = _generate(bff, user_token, task="reviewer", prompt="Review this")
    assert refused.status_code == 403 and "fake-premium" in refused.json()["error"]["message"]
    assert _generate(bff, admin_token, task="reviewer", prompt="Review this").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "Brief!", "prompt": "x"}, "task"),
        ({"task": "brief"}, "exactly one"),
        ({"task": "brief", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "exactly one"),
        ({"task": "brief", "prompt": "x", "temperature": 7}, "temperature"),
        ({"task": "brief", "prompt": "x", "model": "fake-premium"}, "model"),
    ],
)
def test_invalid_requests(bff: Bff, user_token: str, body: dict[str, Any], field: str) -> None:
    answer = _generate(bff, user_token, **body)
    assert answer.status_code == 400 and field in answer.json()["error"]["message"]


def test_env_overrides_single_entries() -> None:
    environ = {"MODEL_RAG_ANSWER": "gpt-4o", "MODEL_DEFAULT": "smart", "IMAGE_WORKFLOW_DEFAULT": "other-flow"}
    router = load_router(ROUTING, "live", environ)
    assert router.model_for("rag.answer") == "gpt-4o"
    assert router.model_for("brief") == "cheap"
    assert router.model_for("anything-else") == "smart"
    assert router.workflow_for("hero_image") == "other-flow"


def test_shipped_routing_has_both_modes() -> None:
    live = load_router(ROOT / "config" / "routing.yaml", "live", {})
    mock = load_router(ROOT / "config" / "routing.yaml", "mock", {})
    tasks = ["brand_summary", "brief", "section_plan", "copywriter", "reviewer", "rag.answer"]
    assert all(mock.model_for(task).startswith("mock-") for task in tasks)
    assert not any(live.model_for(task).startswith("mock-") for task in tasks)
    assert mock.workflow_for("hero_image") == "mock-image"


def test_invalid_routing_file(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("modes:\n  live:\n    chat: {default: x, tasks: {'Bad Task': y}}\n    images: {default: z}\n")
    with pytest.raises(ValueError, match="task names"):
        load_router(path, "live", {})
    path.write_text("modes:\n  live:\n    chat: {default: x}\n    images: {default: z}\n")
    with pytest.raises(ValueError, match="GENERATOR_MODE=mock"):
        load_router(path, "mock", {})


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def test_mock_mode_answers_in_exactly_the_live_shape(bff: Bff, bff_factory: BffFactory, user_token: str) -> None:
    mock = bff_factory(generator_mode="mock")
    live_answer = _generate(bff, user_token, task="brief", prompt="Write a brief").json()
    mock_answer = _generate(mock, user_token, task="brief", prompt="Write a brief").json()
    assert mock_answer["mode"] == "mock" and mock_answer["model"] == "fake-mock"
    assert mock_answer["content"].startswith("Mock answer")
    assert _shape(mock_answer) == _shape(live_answer)
