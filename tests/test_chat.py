"""The chat path end to end: BFF -> real LiteLLM -> fake provider."""

import json
import time
from typing import Any

import httpx
import pytest

from conftest import Bff, BffFactory, chat_body
from support.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY, SLOW_STREAM_CHUNKS, STREAM_GAP_SECONDS, FakeProviderState
from support.servers import free_port


def _events(raw: str) -> list[str]:
    return [line[6:] for line in raw.splitlines() if line.startswith("data: ")]


def test_non_streaming_passes_litellm_answer_through(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    assert answer.status_code == 200
    body = answer.json()
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    assert answer.headers["x-litellm-model-group"] == "fake-mini"
    assert "x-litellm-model-api-base" not in answer.headers
    assert answer.headers["x-request-id"]


def test_user_cannot_be_spoofed(bff: Bff, user_token: str, provider_state: FakeProviderState) -> None:
    headers = {"x-litellm-customer-id": "admin-1", "x-litellm-end-user-id": "admin-1"}
    with bff.client(user_token, headers=headers) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(user="admin-1"))
    assert answer.status_code == 200
    assert provider_state.requests[-1]["user"] == "user-1"


def test_streaming_delivers_chunks_as_they_arrive(bff: Bff, user_token: str, provider_state: FakeProviderState) -> None:
    # The provider sends each chunk only once the client has the one before: a relay that
    # held a chunk back would make the provider wait out its patience (no timing involved).
    contents: list[str] = []
    with bff.client(user_token) as client:
        with client.stream("POST", "/v1/chat/completions", json=chat_body("fake-lockstep-stream", stream=True)) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            for line in answer.iter_lines():
                if line.startswith("data: {") and '"content": "part' in line.replace('":"', '": "'):
                    contents.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
                    if len(contents) < SLOW_STREAM_CHUNKS:
                        provider_state.release_next_chunk()
    assert contents == [f"part{i} " for i in range(SLOW_STREAM_CHUNKS)]
    record = [stream for stream in provider_state.streams if stream.model == "fake-lockstep-stream"][-1]
    assert record.finished and record.waited_out == 0
    assert provider_state.bodies_for("fake-lockstep-stream")[-1]["stream_options"] == {"include_usage": True}


def test_stream_ends_with_usage_and_done(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(stream=True, stream_options={"include_usage": False}))
    events = _events(answer.text)
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["prompt_tokens"] == PROMPT_TOKENS and usage["completion_tokens"] == COMPLETION_TOKENS


def test_fallback_is_visible(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        raw = client.post("/v1/chat/completions", json=chat_body("fake-flaky"))
        product = client.post("/api/chat/completions", json=chat_body("fake-flaky"))
    assert raw.status_code == 200
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    assert raw.headers["x-litellm-model-group"] == "fake-mini"
    body = product.json()
    assert product.status_code == 200
    assert body["fallbacks"] == 1
    assert body["model"] == "fake-mini" and body["requested_model"] == "fake-flaky"


def test_product_response_shape(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        answer = client.post("/api/chat/completions", json=chat_body())
    body = answer.json()
    assert set(body) == {"id", "model", "requested_model", "provider", "content", "usage", "cost", "fallbacks", "created_at"}
    assert body["content"] == REPLY
    assert body["provider"] == "openai"
    assert body["usage"]["total_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS
    # fake-mini costs 1e-6 per input token and 2e-6 per output token (tests/fixtures/litellm.test.yaml).
    assert body["cost"]["input_cost"] == pytest.approx(PROMPT_TOKENS * 1e-6)
    assert body["cost"]["output_cost"] == pytest.approx(COMPLETION_TOKENS * 2e-6)
    assert body["cost"]["total_cost"] == pytest.approx(PROMPT_TOKENS * 1e-6 + COMPLETION_TOKENS * 2e-6)
    assert body["cost"]["currency"] == "USD"


def _error(answer: httpx.Response, status: int, type_: str) -> dict[str, str]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["type"] == type_
    for leak in ("Traceback", "http://", "127.0.0.1", "sk-test-master", "fake-provider-key", "OpenAIException"):
        assert leak not in answer.text
    return error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "fake-mini"}, "messages"),
        ({"model": "fake-mini", "messages": []}, "messages"),
        ({"model": "fake-mini", "messages": "hello"}, "messages"),
        ({"model": "fake-mini", "messages": [{"role": "user", "content": "x"}], "stream": "often"}, "stream"),
    ],
)
def test_invalid_body_names_the_field(bff: Bff, user_token: str, body: dict, field: str) -> None:
    with bff.client(user_token) as client:
        error = _error(client.post("/v1/chat/completions", json=body), 400, "invalid_request_error")
    assert f"'{field}" in error["message"]


def test_malformed_json_is_400(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        for content in (b"{not json", b"[1, 2]"):
            answer = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
            _error(answer, 400, "invalid_request_error")


def test_error_codes(bff: Bff, bff_factory: BffFactory, user_token: str, admin_token: str) -> None:
    with bff.client() as anonymous:
        _error(anonymous.post("/v1/chat/completions", json=chat_body()), 401, "authentication_error")
    with bff.client(user_token) as client:
        denied = _error(client.post("/v1/chat/completions", json=chat_body("fake-premium")), 403, "permission_error")
        assert "fake-premium" in denied["message"] and "user" in denied["message"]
        _error(client.post("/v1/chat/completions", json=chat_body("no-such-model")), 404, "not_found_error")
        _error(client.post("/v1/chat/completions", json=chat_body("fake-ratelimited")), 429, "rate_limit_error")
        _error(client.post("/v1/chat/completions", json=chat_body("fake-broken")), 502, "upstream_error")
    small = bff_factory(max_request_bytes=1024)
    with small.client(user_token) as client:
        big = chat_body(messages=[{"role": "user", "content": "x" * 2048}])
        _error(client.post("/v1/chat/completions", json=big), 413, "invalid_request_error")

        def chunked():  # no Content-Length: the limit must hold while reading
            yield json.dumps(big).encode()

        _error(client.post("/v1/chat/completions", content=chunked()), 413, "invalid_request_error")
    down = bff_factory(litellm_url=f"http://127.0.0.1:{free_port()}")
    with down.client(admin_token) as client:
        _error(client.post("/v1/chat/completions", json=chat_body()), 503, "service_unavailable")
    impatient = bff_factory(upstream_timeout_seconds=1.0)
    with impatient.client(user_token) as client:
        _error(client.post("/v1/chat/completions", json=chat_body("fake-hang")), 504, "timeout_error")


def test_mid_stream_failure_sends_an_error_event(bff_factory: BffFactory, user_token: str) -> None:
    # The slow stream pauses STREAM_GAP_SECONDS between chunks; a shorter read timeout breaks it mid-way.
    impatient = bff_factory(upstream_timeout_seconds=STREAM_GAP_SECONDS / 3)
    with impatient.client(user_token) as client:
        answer = client.post("/v1/chat/completions", json=chat_body("fake-slow-stream", stream=True))
    assert answer.status_code == 200
    events = _events(answer.text)
    assert len(events) >= 2, "some chunks must arrive before the failure"
    last = json.loads(events[-1])
    assert last["error"]["type"] == "timeout_error"
    assert "[DONE]" not in events


def test_client_disconnect_cancels_upstream(bff: Bff, user_token: str, provider_state: FakeProviderState) -> None:
    with bff.client(user_token) as client:
        with client.stream("POST", "/v1/chat/completions", json=chat_body("fake-long-stream", stream=True)) as answer:
            lines = answer.iter_lines()
            received = [next(lines) for _ in range(4)]
            assert any(line.startswith("data: ") for line in received)
            record = provider_state.streams[-1]
        closed_at = time.monotonic()
    deadline = closed_at + 5
    while record.closed_early_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.closed_early_at is not None, "the provider kept streaming after the client left"
    assert not record.finished
    assert record.closed_early_at - closed_at < 3


def test_logs_carry_ids_and_tokens_but_never_content(bff: Bff, user_token: str, caplog: pytest.LogCaptureFixture) -> None:
    secret_words = "purple-elephant-4471"
    caplog.set_level("DEBUG")
    prompt = [{"role": "user", "content": secret_words}]
    with bff.client(user_token) as client:
        client.post("/v1/chat/completions", json=chat_body(messages=prompt), headers={"x-request-id": "req-abc-123"})
        client.post("/v1/chat/completions", json=chat_body(stream=True, messages=prompt), headers={"x-request-id": "req-abc-124"})

    def access() -> dict[str, dict[str, Any]]:
        return {entry["request_id"]: entry for entry in (json.loads(r.getMessage()) for r in caplog.records if r.name == "bff.access")}

    deadline = time.monotonic() + 5
    while "req-abc-124" not in access() and time.monotonic() < deadline:
        time.sleep(0.05)  # a stream's line is written once its response has ended
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert secret_words not in text and REPLY not in text
    answered, streamed = access()["req-abc-123"], access()["req-abc-124"]
    assert answered["principal_id"] == "user-1" and answered["model"] == "fake-mini" and answered["status"] == 200
    assert answered["total_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS and answered["duration_ms"] > 0
    assert streamed["total_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS and streamed["outcome"] == "completed"
