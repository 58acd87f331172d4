"""Real spans from real requests through the real LiteLLM proxy, then the usage API over them."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conftest import FORWARD_SECRET, SERVICE_KEY, WEBUI_SECRET, Bff, chat_body
from support.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS
from support.tokens import forwarded_user_jwt, session_token

# fake-mini's prices in tests/fixtures/litellm.test.yaml
INPUT_PRICE, OUTPUT_PRICE = Decimal("0.000001"), Decimal("0.000002")


def _as_user(bff: Bff, user_id: str, role: str = "user", chat_id: str | None = None) -> httpx.Client:
    user = {"id": user_id, "email": f"{user_id}@example.test", "name": user_id, "role": role}
    headers = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET)}
    if chat_id:
        headers["X-OpenWebUI-Chat-Id"] = chat_id
    return bff.client(SERVICE_KEY, headers=headers)


def _wait_for(client: httpx.Client, params: dict[str, str], requests: int, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get("/api/usage/summary", params=params)
        assert answer.status_code == 200, answer.text
        totals = answer.json()["totals"]
        if totals["requests"] >= requests or time.monotonic() > deadline:
            return answer.json()
        time.sleep(0.2)


@pytest.fixture(scope="module")
def recorded(bff: Bff) -> dict[str, Any]:
    """A known mix of requests by one fresh user; returns what LiteLLM reported for them."""
    user_id = f"usage-{uuid.uuid4().hex[:8]}"
    chat_id = f"chat-{user_id}"
    costs: list[Decimal] = []
    with _as_user(bff, user_id, chat_id=chat_id) as client:
        tagged = {"X-LLM-Context": "brief"}
        for _ in range(2):
            answer = client.post("/v1/chat/completions", json=chat_body(), headers=tagged)
            assert answer.status_code == 200
            costs.append(Decimal(answer.headers["x-litellm-response-cost"]))
        fallback = client.post("/v1/chat/completions", json=chat_body("fake-flaky"))
        assert fallback.headers["x-litellm-attempted-fallbacks"] == "1"
        costs.append(Decimal(fallback.headers["x-litellm-response-cost"]))
        stream = client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert stream.status_code == 200
        costs.append(INPUT_PRICE * PROMPT_TOKENS + OUTPUT_PRICE * COMPLETION_TOKENS)  # streams: tokens x prices
        assert client.post("/v1/chat/completions", json=chat_body("fake-premium")).status_code == 403
        assert client.post("/v1/chat/completions", json=chat_body("no-such-model")).status_code == 404
    return {"user": user_id, "chat": chat_id, "costs": costs, "requests": 6, "errors": 2}


def test_totals_equal_what_litellm_reported(bff: Bff, admin_token: str, recorded: dict[str, Any]) -> None:
    with bff.client(admin_token) as admin:
        body = _wait_for(admin, {"user": recorded["user"]}, recorded["requests"])
    totals = body["totals"]
    assert body["source"] == "rollup+requests"  # six whole days from the rollups, the partial ones from the typed table
    assert totals["requests"] == recorded["requests"]
    assert totals["errors"] == recorded["errors"]
    assert totals["input_tokens"] == PROMPT_TOKENS * 4 and totals["output_tokens"] == COMPLETION_TOKENS * 4
    assert totals["cost_usd"] == float(sum(recorded["costs"]))
    assert totals["fallbacks"] == 1
    assert totals["latency_ms"]["p50"] > 0 and totals["ttft_ms"]["p50"] > 0


def test_breakdowns(bff: Bff, admin_token: str, recorded: dict[str, Any]) -> None:
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": recorded["user"]}, recorded["requests"])
        by_model = admin.get("/api/usage/breakdown", params={"by": "model", "user": recorded["user"]}).json()
        by_status = admin.get("/api/usage/breakdown", params={"by": "status", "user": recorded["user"]}).json()
        by_context = admin.get("/api/usage/breakdown", params={"by": "context", "user": recorded["user"]}).json()
    models = {row["key"]: row["requests"] for row in by_model["rows"]}
    assert models == {"fake-mini": 4, "fake-premium": 1, "no-such-model": 1}
    assert {row["key"]: row["requests"] for row in by_status["rows"]} == {"200": 4, "403": 1, "404": 1}
    assert {row["key"]: row["requests"] for row in by_context["rows"]}["brief"] == 2


def test_session_view(bff: Bff, admin_token: str, recorded: dict[str, Any]) -> None:
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": recorded["user"]}, recorded["requests"])
        session = admin.get(f"/api/usage/sessions/{recorded['chat']}").json()
    assert session["totals"]["requests"] == recorded["requests"]
    assert len(session["requests"]) == recorded["requests"]
    assert sum(1 for r in session["requests"] if r["stream"]) == 1


def test_timeseries_and_rollup_agree(bff: Bff, admin_token: str, recorded: dict[str, Any]) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    whole_day = {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat(), "user": recorded["user"]}
    with bff.client(admin_token) as admin:
        _wait_for(admin, {"user": recorded["user"]}, recorded["requests"])
        rollup = admin.get("/api/usage/summary", params=whole_day).json()
        hourly = admin.get("/api/usage/timeseries", params={**whole_day, "bucket": "hour"}).json()
        daily = admin.get("/api/usage/timeseries", params={**whole_day, "bucket": "day"}).json()
    assert rollup["source"] == "rollup"
    assert rollup["totals"]["requests"] == recorded["requests"]
    assert rollup["totals"]["cost_usd"] == float(sum(recorded["costs"]))
    assert hourly["source"] == "requests" and len(hourly["points"]) == 24
    assert sum(p["requests"] for p in hourly["points"]) == recorded["requests"]
    assert daily["source"] == "rollup" and [p["requests"] for p in daily["points"]] == [recorded["requests"]]


def test_users_see_only_their_own_usage(bff: Bff, recorded: dict[str, Any]) -> None:
    with _as_user(bff, recorded["user"]) as owner:
        own = _wait_for(owner, {}, recorded["requests"])
    assert own["filters"]["user"] == recorded["user"] and own["totals"]["requests"] == recorded["requests"]
    with _as_user(bff, f"other-{uuid.uuid4().hex[:6]}") as other:
        assert other.get("/api/usage/summary", params={"user": recorded["user"]}).status_code == 403
        for by in ("user", "model", "session"):
            rows = other.get("/api/usage/breakdown", params={"by": by}).json()["rows"]
            assert rows == [], by
        session = other.get(f"/api/usage/sessions/{recorded['chat']}").json()
        assert session["totals"]["requests"] == 0 and session["requests"] == []


@pytest.mark.parametrize("field", ["model", "user", "provider", "context"])
def test_injection_attempts_fail_harmlessly(bff: Bff, admin_token: str, recorded: dict[str, Any], field: str) -> None:
    attempts = ["x' OR '1'='1", "x') OR 1=1 --", "{user:String}", "x\\'; DROP TABLE otel.gateway_requests; --"]
    with bff.client(admin_token) as admin:
        for attempt in attempts:
            answer = admin.get("/api/usage/summary", params={field: attempt})
            assert answer.status_code == 200, answer.text
            assert answer.json()["totals"]["requests"] == 0
            assert answer.json()["filters"][field] == attempt
        assert _wait_for(admin, {"user": recorded["user"]}, recorded["requests"])["totals"]["requests"] == recorded["requests"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"status": "teapot"}, "status"),
        ({"model": "m" * 300}, "model"),
    ],
)
def test_invalid_filters_name_the_field(bff: Bff, admin_token: str, params: dict[str, str], field: str) -> None:
    with bff.client(admin_token) as admin:
        answer = admin.get("/api/usage/summary", params=params)
    assert answer.status_code == 400
    assert f"'{field}" in answer.json()["error"]["message"] or f".{field}'" in answer.json()["error"]["message"]


def test_bad_dimension_bucket_and_limits(bff: Bff, admin_token: str) -> None:
    with bff.client(admin_token) as admin:
        assert admin.get("/api/usage/breakdown", params={"by": "password"}).status_code == 400
        assert admin.get("/api/usage/timeseries", params={"bucket": "minute"}).status_code == 400
        assert admin.get("/api/usage/breakdown", params={"by": "model", "limit": 5000}).status_code == 400
        long_hourly = {"bucket": "hour", "from": "2025-01-01T00:00:00Z", "to": "2025-12-01T00:00:00Z"}
        assert admin.get("/api/usage/timeseries", params=long_hourly).status_code == 400


def test_refused_requests_get_exactly_one_span(bff: Bff, admin_token: str) -> None:
    request_id = f"refused-{uuid.uuid4().hex[:8]}"
    with bff.client(headers={"x-request-id": request_id}) as anonymous:
        assert anonymous.post("/v1/chat/completions", json=chat_body()).status_code == 401
    with bff.client(admin_token) as admin:
        deadline = time.monotonic() + 10
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not rows:
            rows = admin.get("/api/usage/breakdown", params={"by": "status", "status": "401"}).json()["rows"]
            time.sleep(0.2)
    assert rows and rows[0]["key"] == "401"


def test_service_key_and_pending_cannot_read_usage(bff: Bff) -> None:
    with bff.client(SERVICE_KEY) as service:
        assert service.get("/api/usage/summary").status_code == 403
    with bff.client(session_token("pending-1", WEBUI_SECRET)) as pending:
        assert pending.get("/api/usage/summary").status_code == 403


def _wait_for_request(client: httpx.Client, request_id: str, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/usage/requests/{request_id}")
        if answer.status_code != 404 or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_request_lookup_by_request_id(bff: Bff, admin_token: str) -> None:
    user_id = f"lookup-{uuid.uuid4().hex[:8]}"
    with _as_user(bff, user_id) as owner:
        chat = owner.post("/v1/chat/completions", json=chat_body(), headers={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
        assert chat.status_code == 200
        request_id = chat.headers["x-request-id"]
        mine = _wait_for_request(owner, request_id)
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["trace_id"] == "ab" * 16
    request = body["request"]
    assert (request["user_id"], request["role"], request["model"], request["status"]) == (user_id, "user", "fake-mini", 200)
    assert (request["input_tokens"], request["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert request["cost_usd"] == pytest.approx(float(chat.headers["x-litellm-response-cost"]))
    gateway_span = next(span for span in body["spans"] if span["service_name"] == "llm-bff")
    assert gateway_span["parent_span_id"] == "cd" * 8 and gateway_span["span_kind"] == "Server"
    with _as_user(bff, f"other-{uuid.uuid4().hex[:8]}") as other:
        assert other.get(f"/api/usage/requests/{request_id}").status_code == 404  # not theirs: not found
    with bff.client(admin_token) as admin:
        assert admin.get(f"/api/usage/requests/{request_id}").json()["request"]["user_id"] == user_id
        assert admin.get("/api/usage/requests/no-such-request").status_code == 404
        bad = admin.get("/api/usage/requests/bad%20id%27")
    assert bad.status_code == 400 and "request_id" in bad.json()["error"]["message"]
