"""Every OpenAI operation goes through the gateway: the official SDK gets the same answers as
straight from LiteLLM, and each call is recorded under the caller with its operation, tokens
and cost, charged to the budget, and refused without the permission or outside the policy."""

import io
import struct
import uuid
import wave
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import yaml

from conftest import MASTER_KEY, ROOT, SERVICE_KEY, Bff, BffFactory
from support.tokens import session_token
from test_usage import _as_user, _wait_for_request


def _wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack("<h", 0) * int(seconds * rate))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def user() -> str:
    return f"surface-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def sdk(bff: Bff, user: str) -> openai.OpenAI:
    """The official SDK as an Open-WebUI user (service key + forwarded identity)."""
    with _as_user(bff, user) as client:
        identity = {"X-OpenWebUI-User-Jwt": client.headers["X-OpenWebUI-User-Jwt"]}
    return openai.OpenAI(base_url=f"{bff.url}/v1", api_key=SERVICE_KEY, default_headers=identity, max_retries=0)


@pytest.fixture(scope="module")
def direct(litellm_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{litellm_url}/v1", api_key=MASTER_KEY, max_retries=0)


Call = Callable[[openai.OpenAI], Any]


def _spent(bff: Bff, user: str) -> float:
    with _as_user(bff, user) as client:
        periods = client.get("/api/usage/budget").json()["periods"]
    return float(next(period["spent_usd"] for period in periods if period["period"] == "daily"))

CASES: dict[str, tuple[str, Call]] = {
    "embeddings": ("embeddings", lambda c: c.embeddings.with_raw_response.create(model="fake-embed", input=["one", "two", "three"])),
    "embeddings-tokens": ("embeddings", lambda c: c.embeddings.with_raw_response.create(model="fake-embed", input=[[1, 2, 3], [4, 5]])),
    "completions": ("text_completion", lambda c: c.completions.with_raw_response.create(model="fake-completion", prompt="Say hi")),
    "responses": ("responses", lambda c: c.responses.with_raw_response.create(model="fake-responses", input="Say hi")),
    "moderations": ("moderation", lambda c: c.moderations.with_raw_response.create(model="fake-moderation", input="hello")),
    "speech": ("audio_speech", lambda c: c.audio.speech.with_raw_response.create(model="fake-tts", voice="alloy", input="hello world")),
    "transcriptions": (
        "audio_transcription",
        lambda c: c.audio.transcriptions.with_raw_response.create(model="fake-stt", file=("hello.wav", _wav(), "audio/wav")),
    ),
    "images": ("images", lambda c: c.images.with_raw_response.generate(model="fake-image", prompt="a lighthouse", n=2)),
}
PRICED = {"embeddings", "embeddings-tokens", "completions", "responses", "speech", "transcriptions", "images"}


def _shape(parsed: Any) -> Any:
    """What must match between the two paths: the answer's structure, not ids or timestamps."""
    if isinstance(parsed, bytes):
        return ("bytes", parsed[:4])
    data = parsed.model_dump() if hasattr(parsed, "model_dump") else parsed
    if isinstance(data, dict):
        return {key: _shape(value) for key, value in data.items() if key not in {"id", "created", "created_at", "user", "usage"}}
    if isinstance(data, list):
        return [_shape(item) for item in data]
    return type(data).__name__


@pytest.mark.parametrize("case", list(CASES))
def test_sdk_operation_through_the_gateway(
    case: str, sdk: openai.OpenAI, direct: openai.OpenAI, bff: Bff, admin_token: str, user: str
) -> None:
    operation, call = CASES[case]
    spent_before = _spent(bff, user)
    through = call(sdk)
    straight = call(direct)
    assert through.status_code == 200
    body_through = through.content if case == "speech" else through.parse()
    body_straight = straight.content if case == "speech" else straight.parse()
    assert _shape(body_through) == _shape(body_straight)
    request_id = through.headers["x-request-id"]
    with bff.client(admin_token) as admin:
        stored = _wait_for_request(admin, request_id)
    assert stored.status_code == 200, stored.text
    row = stored.json()["request"]
    assert row["user_id"] == user and row["operation"] == operation and row["status"] == 200
    assert row["outcome"] == "completed" and not row["cost_estimated"]
    if case in PRICED:
        assert row["cost_usd"] == pytest.approx(float(through.headers["x-litellm-response-cost"]))
        assert row["cost_usd"] > 0
        assert _spent(bff, user) == pytest.approx(spent_before + row["cost_usd"])  # charged to the budget
    if case.startswith("embeddings") or case in ("completions", "responses"):
        assert row["input_tokens"] > 0


def test_streams_of_completions_and_responses_are_billed(sdk: openai.OpenAI, bff: Bff, admin_token: str) -> None:
    completion = sdk.completions.with_raw_response.create(model="fake-completion", prompt="Say hi", stream=True)
    text = "".join(chunk.choices[0].text or "" for chunk in completion.parse() if chunk.choices)
    response = sdk.responses.with_raw_response.create(model="fake-responses", input="Say hi", stream=True)
    events = list(response.parse())
    assert text and events[-1].type == "response.completed"
    with bff.client(admin_token) as admin:
        for raw, operation in ((completion, "text_completion"), (response, "responses")):
            row = _wait_for_request(admin, raw.headers["x-request-id"]).json()["request"]
            assert row["operation"] == operation and row["stream"] and row["outcome"] == "completed"
            assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and row["cost_usd"] > 0
            assert not row["cost_estimated"]


def test_models_retrieve_follows_the_policy(bff: Bff, user_token: str, admin_token: str) -> None:
    user_sdk = openai.OpenAI(base_url=f"{bff.url}/v1", api_key=user_token, max_retries=0)
    model = user_sdk.models.retrieve("fake-embed")
    assert model.id == "fake-embed" and model.model_dump()["mode"] == "embedding"
    listed = {m.id: m.model_dump()["mode"] for m in user_sdk.models.list()}
    assert listed["fake-mini"] == "chat" and "fake-premium" not in listed
    with pytest.raises(openai.NotFoundError):
        user_sdk.models.retrieve("fake-premium")  # not allowed reads as unknown
    with pytest.raises(openai.NotFoundError):
        user_sdk.models.retrieve("no-such-model")
    admin_sdk = openai.OpenAI(base_url=f"{bff.url}/v1", api_key=admin_token, max_retries=0)
    assert admin_sdk.models.retrieve("fake-premium").id == "fake-premium"


def test_a_model_called_with_the_wrong_operation_is_400(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        answer = client.post("/v1/embeddings", json={"model": "fake-mini", "input": "hi"})
        chat = client.post("/v1/chat/completions", json={"model": "fake-embed", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "wrong_model_mode"
    assert "POST /v1/chat/completions" in answer.json()["error"]["message"]
    assert chat.status_code == 400 and "POST /v1/embeddings" in chat.json()["error"]["message"]


def test_refused_outside_the_policy_and_without_the_permission(bff_factory: BffFactory, tmp_path: Any, user_token: str) -> None:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["roles"]["user"]["permissions"] = ["chat", "usage.own"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    narrow = bff_factory(policy_file=path)
    with narrow.client(user_token) as client:
        embed = client.post("/v1/embeddings", json={"model": "fake-embed", "input": "hi"})
        speech = client.post("/v1/audio/speech", json={"model": "fake-tts", "voice": "alloy", "input": "hi"})
    assert embed.status_code == 403 and embed.json()["error"]["code"] == "permission_denied"
    assert speech.status_code == 403 and "audio" in speech.json()["error"]["message"]
    with httpx.Client(base_url=narrow.url, headers={"Authorization": f"Bearer {session_token('user-1', 'test-webui-secret-key')}"}) as client:
        premium = client.post("/v1/embeddings", json={"model": "fake-embed-premium", "input": "hi"})
    assert premium.status_code == 403


def test_operation_fields_are_validated_and_litellm_controls_refused(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        for path, body, field in (
            ("/v1/embeddings", {"model": "fake-embed", "input": "hi", "fallbacks": ["fake-embed-premium"]}, "fallbacks"),
            ("/v1/embeddings", {"model": "fake-embed", "input": "hi", "api_base": "http://x"}, "api_base"),
            ("/v1/embeddings", {"model": "fake-embed", "input": "hi", "_skip_mcp_handler": True}, "_skip_mcp_handler"),
            ("/v1/responses", {"model": "fake-responses", "input": "hi", "text_format": {"x": 1}}, "text_format"),
            ("/v1/responses", {"model": "fake-responses", "input": "hi", "stream": "true"}, "stream"),
            ("/v1/completions", {"model": "fake-completion", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
            ("/v1/rerank", {"model": "fake-rerank", "query": "q", "documents": ["a"], "num_retries": 9}, "num_retries"),
        ):
            answer = client.post(path, json=body)
            assert answer.status_code == 400, (path, field, answer.text)
            assert f"'{field}'" in answer.json()["error"]["message"], answer.text
        big = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("x.wav", b"\0" * (bff.settings.max_upload_bytes + 1), "audio/wav")},
            data={"model": "fake-stt"},
        )
        assert big.status_code == 413
        no_file = client.post("/v1/audio/transcriptions", data={"model": "fake-stt"}, files={"other": ("x", b"1")})
        assert no_file.status_code == 400
        assert client.post("/v1/audio/translations", files={"file": ("x.wav", _wav())}, data={"model": "fake-stt"}).status_code == 501


def test_rerank_on_both_paths(bff: Bff, user_token: str, admin_token: str) -> None:
    body = {"model": "fake-rerank", "query": "which is red", "documents": ["apple", "sky", "grass"]}
    with bff.client(user_token) as client:
        answers = [client.post("/v1/rerank", json=body), client.post("/rerank", json=body)]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 3
    with bff.client(admin_token) as admin:
        row = _wait_for_request(admin, answers[0].headers["x-request-id"]).json()["request"]
    assert row["operation"] == "rerank" and row["user_id"] == "user-1" and row["cost_usd"] > 0
