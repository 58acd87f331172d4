"""Hostile chat bodies: LiteLLM's own controls refused, strict types, deep JSON, fallbacks
kept inside the caller's policy, and the error mapping of a few awkward cases.

Everything goes through the real BFF and the real LiteLLM; only the provider is faked
(tests/support/fake_openai.py). The crossing fallback chains are in
tests/fixtures/litellm.test.yaml (fake-crossing*, target fake-advanced: tier advanced,
which role `user` may not use).
"""

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from bff.clickhouse import ClickHouseStore
from bff.upstream.litellm_fields import OPENAI_CHAT_FIELDS, REFUSED_BODY_FIELD_PREFIX, REFUSED_BODY_FIELDS
from conftest import FORWARD_SECRET, LITELLM_BIN, ROOT, SERVICE_KEY, WEBUI_SECRET, Bff, BffFactory, chat_body
from support.fake_openai import FakeProviderState
from support.spans import spans_for
from support.tokens import forwarded_user_jwt, session_token

CHAT_ROUTES = ("/v1/chat/completions", "/api/chat/completions")
LEAKS = ("Traceback", "http://", "https://", "127.0.0.1", "sk-test-master", "fake-provider-key", "Exception", "litellm.")


def _owui_headers(user_id: str, role: str) -> dict[str, str]:
    user = {"id": user_id, "email": f"{user_id}@example.test", "name": user_id, "role": role}
    return {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET)}


@contextmanager
def _caller(bff: Bff, identity: str, role: str = "user", headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """`session`: an Open-WebUI session token; `openwebui`: the service key plus the forwarded user JWT."""
    user_id = f"{role}-1"
    if identity == "session":
        client = bff.client(session_token(user_id, WEBUI_SECRET), headers=headers)
    else:
        client = bff.client(SERVICE_KEY, headers={**_owui_headers(user_id, role), **(headers or {})})
    with client:
        yield client


def _error(answer: httpx.Response, status: int) -> dict[str, str]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "code"}, error
    for leak in LEAKS:
        assert leak not in answer.text, (leak, answer.text)
    return error


def _store(clickhouse_url: str) -> ClickHouseStore:
    return ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")


def _marker() -> str:
    return f"marker-{uuid.uuid4().hex[:12]}"


def _bodies_with(state: FakeProviderState, marker: str) -> list[dict[str, Any]]:
    """The provider requests that carried `marker` in a message: one per attempt LiteLLM made."""
    def carries(body: dict[str, Any]) -> bool:
        messages = body.get("messages")
        return isinstance(messages, list) and any(isinstance(m, dict) and m.get("content") == marker for m in messages)

    return [body for body in state.requests if carries(body)]


# --- LiteLLM's own controls are refused -------------------------------------------------------

# Representative values, per concern; the key must be refused whatever its value (null included:
# `fallbacks: null` would switch LiteLLM's configured chains off).
REFUSED_EXAMPLES: list[tuple[str, Any]] = [
    ("fallbacks", ["fake-premium"]),
    ("fallbacks", [{"model": "fake-premium"}]),
    ("fallbacks", [{"fake-mini": ["fake-premium"]}]),
    ("fallbacks", None),
    ("fallbacks", []),
    ("context_window_fallbacks", [{"fake-mini": ["fake-premium"]}]),
    ("content_policy_fallbacks", [{"fake-mini": ["fake-premium"]}]),
    ("router_settings_override", {"fallbacks": [{"fake-mini": ["fake-premium"]}]}),
    ("disable_fallbacks", True),
    ("max_fallbacks", 10),
    ("num_retries", 5),
    ("max_retries", 5),
    ("timeout", 1),
    ("stream_timeout", 1),
    ("request_timeout", 1),
    ("cache", {"no-cache": True}),
    ("caching", True),
    ("mock_response", "pwned"),
    ("mock_testing_fallbacks", True),
    ("api_base", "http://evil.example/v1"),
    ("base_url", "http://evil.example/v1"),
    ("api_key", "sk-evil-0123456789"),
    ("custom_llm_provider", "anthropic"),
    ("extra_body", {"fallbacks": ["fake-premium"]}),
    ("extra_headers", {"x-evil": "1"}),
    ("input_cost_per_token", 0),
    ("output_cost_per_token", 0),
    ("success_callback", ["langfuse"]),
    ("guardrails", ["none"]),
    ("tags", ["free-tier"]),
    ("specific_deployment", True),
    ("user_config", {"model_list": []}),
    ("model_list", [{"model_name": "fake-mini", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://evil.example"}}]),
    ("litellm_metadata", {"user": "admin-1"}),
    ("priority", 0),
    ("metadata", {"tags": ["free-tier"]}),
    ("metadata", {}),
    ("_litellm_anything", True),
    ("_litellm_", 1),
]


def test_representative_fields_are_litellm_controls() -> None:
    names = {name for name, _ in REFUSED_EXAMPLES} - {"metadata"}
    missing = {name for name in names if name not in REFUSED_BODY_FIELDS and not name.startswith(REFUSED_BODY_FIELD_PREFIX)}
    assert not missing, f"not in REFUSED_BODY_FIELDS: {sorted(missing)}"
    assert "metadata" in OPENAI_CHAT_FIELDS and "metadata" not in REFUSED_BODY_FIELDS  # refused as gateway-owned


def test_refused_fields_are_derived_from_the_pinned_litellm() -> None:
    python = LITELLM_BIN.parent / "python"
    output = subprocess.run(
        [str(python), str(ROOT / "scripts" / "litellm_body_fields.py")], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    derived = json.loads(output)
    assert isinstance(derived, list) and all(isinstance(name, str) for name in derived)
    assert set(derived) - OPENAI_CHAT_FIELDS == REFUSED_BODY_FIELDS
    assert "metadata" in derived  # LiteLLM's own bucket, refused by the gateway as its own


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", CHAT_ROUTES)
@pytest.mark.parametrize("identity", ["session", "openwebui"])
def test_litellm_controls_are_refused(bff: Bff, provider_state: FakeProviderState, identity: str, route: str, stream: bool) -> None:
    sent = len(provider_state.requests)
    wrong: list[str] = []
    with _caller(bff, identity) as client:
        for name, value in REFUSED_EXAMPLES:
            answer = client.post(route, json=chat_body(stream=stream, **{name: value}))
            if answer.status_code != 400:
                wrong.append(f"{name}={value!r}: {answer.status_code} {answer.text[:160]}")
                continue
            error = _error(answer, 400)
            if error["code"] != "field_not_allowed" or f"'{name}'" not in error["message"]:
                wrong.append(f"{name}={value!r}: {error}")
    assert not wrong, "\n".join(wrong)
    assert len(provider_state.requests) == sent, "a refused body reached the provider"


def test_every_refused_field_is_refused(bff: Bff, user_token: str, provider_state: FakeProviderState) -> None:
    sent = len(provider_state.requests)
    wrong: list[str] = []
    with bff.client(user_token) as client:
        for name in sorted(REFUSED_BODY_FIELDS):
            answer = client.post("/v1/chat/completions", json=chat_body(**{name: "x"}))
            body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
            error = body.get("error") or {}
            if answer.status_code != 400 or error.get("code") != "field_not_allowed" or f"'{name}'" not in error.get("message", ""):
                wrong.append(f"{name}: {answer.status_code} {answer.text[:160]}")
    assert not wrong, "\n".join(wrong)
    assert len(provider_state.requests) == sent


def test_refusal_names_the_first_field_and_is_recorded(bff: Bff, user_token: str, clickhouse_url: str) -> None:
    request_id = f"refused-{uuid.uuid4().hex[:8]}"
    with bff.client(user_token, headers={"x-request-id": request_id}) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(num_retries=3, api_base="http://evil.example"))
    error = _error(answer, 400)
    assert error["code"] == "field_not_allowed" and "'api_base'" in error["message"]
    spans = spans_for(_store(clickhouse_url), request_id)
    assert len(spans) == 1
    attributes = spans[0]["SpanAttributes"]
    assert attributes["gateway.outcome"] == "refused" and attributes["error.type"] == "field_not_allowed"
    assert attributes["enduser.id"] == "user-1" and attributes["http.response.status_code"] == "400"


# --- strict types ------------------------------------------------------------------------------

STRICT_CASES: list[tuple[str, Any]] = [
    *(("stream", value) for value in ("true", "false", 1, 0, "yes", "", None, [], {}, "null", 1.0)),
    *(("stream_options", value) for value in ("include_usage", ["include_usage"], [], 1, True)),
    ("stream_options", {"include_usage": "yes"}),
    *(("n", value) for value in (0, 17, -1, 1000, "2", 2.5, 2.0, True)),
    *(("max_tokens", value) for value in (0, -5, 1_000_001, 10**12, "100", 10.5, 100.0, True, [100])),
    *(("max_completion_tokens", value) for value in (0, 1_000_001, "100", 1.5, False)),
]


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_strict_types(bff: Bff, user_token: str, provider_state: FakeProviderState, route: str) -> None:
    sent = len(provider_state.requests)
    wrong: list[str] = []
    with bff.client(user_token) as client:
        for name, value in STRICT_CASES:
            body = chat_body(**{name: value})
            answer = client.post(route, json=body)
            if answer.status_code != 400:
                wrong.append(f"{name}={value!r}: {answer.status_code} {answer.text[:120]}")
                continue
            error = _error(answer, 400)
            if f"'{name}" not in error["message"] or error["type"] != "invalid_request_error":
                wrong.append(f"{name}={value!r}: {error}")
    assert not wrong, "\n".join(wrong)
    assert len(provider_state.requests) == sent


def test_bounds_are_inclusive(bff: Bff, user_token: str, provider_state: FakeProviderState) -> None:
    with bff.client(user_token) as client:
        for extra in ({"n": 1}, {"n": 16}, {"max_tokens": 1}, {"max_tokens": 1_000_000}, {"max_completion_tokens": 1_000_000}):
            answer = client.post("/v1/chat/completions", json=chat_body(**extra))
            assert answer.status_code == 200, (extra, answer.text)
            name, value = next(iter(extra.items()))
            assert provider_state.requests[-1][name] == value


def _nested_body(depth: int, stream: bool) -> bytes:
    """A chat body whose one message carries `depth` levels of nested lists."""
    message = '{"role":"user","content":"hi","x":' + "[" * depth + "]" * depth + "}"
    return ('{"model":"fake-mini","stream":' + json.dumps(stream) + ',"messages":[' + message + "]}").encode()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_json_nested_too_deeply_is_400(bff: Bff, user_token: str, route: str, stream: bool) -> None:
    with bff.client(user_token) as client:
        for depth in (1_100, 5_000, 100_000):
            answer = client.post(route, content=_nested_body(depth, stream), headers={"content-type": "application/json"})
            error = _error(answer, 400)
            assert error["code"] == "invalid_json", (depth, error)
        deep_object = ('{"model":"fake-mini","messages":[{"role":"user","content":"hi","x":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}]}").encode()
        error = _error(client.post(route, content=deep_object, headers={"content-type": "application/json"}), 400)
        assert error["code"] == "invalid_json"


def test_nesting_near_the_limit_is_never_a_server_error(bff: Bff, user_token: str) -> None:
    """Every depth is either served or refused as the client's fault (400), never a 5xx.

    The BFF's limit is implicit (Python's recursion limit minus the stack depth where it
    parses), so it sits a few levels above the depth LiteLLM itself can re-encode.
    """
    seen: dict[int, list[int]] = {}
    with bff.client(user_token) as client:
        for stream in (False, True):
            for depth in range(900, 1_001):
                answer = client.post(
                    "/v1/chat/completions", content=_nested_body(depth, stream), headers={"content-type": "application/json"}
                )
                seen.setdefault(answer.status_code, []).append(depth)
    server_errors = {status: depths for status, depths in seen.items() if status >= 500}
    assert not server_errors, f"5xx for client-side nesting (status: depths): {server_errors}"


def test_openai_fields_and_provider_extras_reach_the_provider_unchanged(
    bff: Bff, user_token: str, provider_state: FakeProviderState
) -> None:
    legit: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Looks a word up",
                    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
                },
            }
        ],
        "tool_choice": "auto",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": True},
        },
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 42,
        "stop": ["END", "STOP"],
        "temperature": 0.25,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.1,
        "n": 2,
        "max_tokens": 256,
        "top_k": 5,
    }
    for route in CHAT_ROUTES:
        with bff.client(user_token) as client:
            answer = client.post(route, json=chat_body(user="admin-1", **legit))
        assert answer.status_code == 200, answer.text
        received = provider_state.requests[-1]
        changed = {name: (value, received.get(name, "<missing>")) for name, value in legit.items() if received.get(name) != value}
        assert not changed, f"{route}: sent -> received {changed}"
        assert received["user"] == "user-1"


@pytest.mark.parametrize("identity", ["session", "openwebui"])
def test_client_user_and_safety_identifier_become_the_caller(bff: Bff, provider_state: FakeProviderState, identity: str) -> None:
    with _caller(bff, identity) as client:
        answer = client.post("/v1/chat/completions", json=chat_body(user="admin-1", safety_identifier="admin-1"))
        assert answer.status_code == 200, answer.text
        received = provider_state.requests[-1]
        assert received["user"] == "user-1"
        assert received.get("safety_identifier", "user-1") == "user-1"
        answer = client.post("/v1/chat/completions", json=chat_body(stream=True, user="admin-1"))
        assert answer.status_code == 200
        assert provider_state.requests[-1]["user"] == "user-1"


# --- fallbacks stay inside the caller's policy ------------------------------------------------

# group -> (upstream model that fails, how it fails); each group's configured chain is [fake-advanced, fake-mini]
CROSSING = {
    "fake-crossing": "fake-500",  # fallbacks
    "fake-crossing-context": "fake-context-window",  # context_window_fallbacks
    "fake-crossing-policy": "fake-content-policy",  # content_policy_fallbacks
}


def _stream_events(answer: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("group", sorted(CROSSING))
@pytest.mark.parametrize(
    ("identity", "route", "stream"),
    [
        ("session", "/v1/chat/completions", False),
        ("session", "/v1/chat/completions", True),
        ("session", "/api/chat/completions", False),
        ("openwebui", "/v1/chat/completions", False),
        ("openwebui", "/v1/chat/completions", True),
    ],
)
def test_user_falls_back_only_to_allowed_targets(
    bff: Bff, provider_state: FakeProviderState, clickhouse_url: str, group: str, identity: str, route: str, stream: bool
) -> None:
    marker, request_id = _marker(), f"fb-user-{uuid.uuid4().hex[:8]}"
    body = chat_body(group, stream=stream, messages=[{"role": "user", "content": marker}])
    with _caller(bff, identity, headers={"x-request-id": request_id}) as client:
        answer = client.post(route, json=body)
    assert answer.status_code == 200, answer.text
    attempts = [attempt["model"] for attempt in _bodies_with(provider_state, marker)]
    assert attempts == [CROSSING[group], "gpt-4o-mini"], attempts  # the failing group, then fake-mini; never fake-advanced
    if route.startswith("/api"):
        assert answer.json()["model"] == "fake-mini" and answer.json()["fallbacks"] == 1
    else:
        assert answer.headers["x-litellm-model-group"] == "fake-mini"
        assert answer.headers["x-litellm-attempted-fallbacks"] == "1"
    if stream:
        models = {event.get("model") for event in _stream_events(answer)}
        assert models <= {None, "fake-mini", "gpt-4o-mini"} and "fake-advanced" not in answer.text, models
    attributes = spans_for(_store(clickhouse_url), request_id)[0]["SpanAttributes"]
    assert attributes["gen_ai.response.model"] == "fake-mini" and attributes["gen_ai.request.model"] == group
    assert "gateway.served_outside_policy" not in attributes


@pytest.mark.parametrize("group", sorted(CROSSING))
@pytest.mark.parametrize(("identity", "stream"), [("session", False), ("session", True), ("openwebui", False)])
def test_admin_falls_back_along_the_whole_chain(
    bff: Bff, provider_state: FakeProviderState, group: str, identity: str, stream: bool
) -> None:
    marker = _marker()
    with _caller(bff, identity, role="admin") as client:
        answer = client.post("/v1/chat/completions", json=chat_body(group, stream=stream, messages=[{"role": "user", "content": marker}]))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-litellm-model-group"] == "fake-advanced"
    assert [attempt["model"] for attempt in _bodies_with(provider_state, marker)] == [CROSSING[group], "fake-advanced"]


@pytest.mark.parametrize(
    ("identity", "route", "stream"),
    [
        ("session", "/v1/chat/completions", False),
        ("session", "/v1/chat/completions", True),
        ("session", "/api/chat/completions", False),
        ("openwebui", "/v1/chat/completions", False),
        ("openwebui", "/v1/chat/completions", True),
    ],
)
def test_user_gets_the_error_when_only_premium_could_answer(
    bff: Bff, provider_state: FakeProviderState, identity: str, route: str, stream: bool
) -> None:
    marker = _marker()
    body = chat_body("fake-crossing-premium-only", stream=stream, messages=[{"role": "user", "content": marker}])
    with _caller(bff, identity) as client:
        answer = client.post(route, json=body)
    error = _error(answer, 502)
    assert error["type"] == "upstream_error"
    assert [attempt["model"] for attempt in _bodies_with(provider_state, marker)] == ["fake-500"]  # fake-premium never asked
    with _caller(bff, identity, role="admin") as admin:
        served = admin.post("/v1/chat/completions", json=chat_body("fake-crossing-premium-only", stream=stream))
    assert served.status_code == 200 and served.headers["x-litellm-model-group"] == "fake-premium"


def test_crossing_chains_are_named_at_catalog_load(bff_factory: BffFactory, user_token: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="bff.policy")
    fresh = bff_factory()  # loads its catalog on the first request
    with fresh.client(user_token) as client:
        assert client.get("/v1/models").status_code == 200
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    text = "\n".join(record.getMessage() for record in caplog.records if record.name == "bff.policy")
    for crossing in (
        "fallbacks: fake-crossing -> fake-advanced",
        "fallbacks: fake-crossing-premium-only -> fake-premium",
        "context_window_fallbacks: fake-crossing-context -> fake-advanced",
        "content_policy_fallbacks: fake-crossing-policy -> fake-advanced",
    ):
        assert crossing in text, f"{crossing!r} not logged:\n{text}"
    assert "-> fake-mini" not in text and "fake-flaky" not in text  # chains within the policy are not named


# --- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "stream"), [("/v1/chat/completions", False), ("/v1/chat/completions", True), ("/api/chat/completions", False)]
)
def test_provider_rate_limit_is_429_with_retry_after(bff: Bff, user_token: str, route: str, stream: bool) -> None:
    with bff.client(user_token) as client:
        answer = client.post(route, json=chat_body("fake-ratelimited", stream=stream))
    error = _error(answer, 429)
    assert error["type"] == "rate_limit_error"
    assert answer.headers["retry-after"] == "7"


@pytest.mark.parametrize("to", ["0001-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "9999-12-31T00:00:00Z"])
def test_usage_range_outside_the_store_is_400(bff: Bff, user_token: str, admin_token: str, to: str) -> None:
    for token in (user_token, admin_token):
        with bff.client(token) as client:
            answer = client.get("/api/usage/summary", params={"from": "0001-01-01T00:00:00Z", "to": to})
        error = _error(answer, 400)
        assert "'from'" in error["message"] or "'to'" in error["message"]
    with bff.client(admin_token) as client:
        answer = client.get("/api/usage/summary", params={"from": "2026-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"})
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize("identity", ["session", "openwebui"])
def test_pending_users_refusal_is_recorded_with_their_id(bff: Bff, clickhouse_url: str, identity: str) -> None:
    request_id = f"pending-{uuid.uuid4().hex[:8]}"
    if identity == "session":
        client = bff.client(session_token("pending-1", WEBUI_SECRET), headers={"x-request-id": request_id})
    else:
        client = bff.client(SERVICE_KEY, headers={"x-request-id": request_id, **_owui_headers("pending-1", "pending")})
    with client:
        answer = client.post("/v1/chat/completions", json=chat_body())
    error = _error(answer, 403)
    assert error["code"] == "account_pending"
    spans = spans_for(_store(clickhouse_url), request_id)
    assert len(spans) == 1
    attributes = spans[0]["SpanAttributes"]
    assert attributes["enduser.id"] == "pending-1"
    assert attributes["error.type"] == "account_pending" and attributes["gateway.outcome"] == "refused"
    assert attributes["http.response.status_code"] == "403"
