"""LiteLLM's own provider and deployment budgets, with the real LiteLLM process.

tests/fixtures/litellm.provider-budgets.yaml gives LiteLLM two providers in front of the
loopback fake provider: `openai` (budget 4e-5 USD a day) serving `budget-primary`, and
`hosted_vllm` (100 USD) serving `budget-fallback`; and `budget-capped`, a deployment with a
budget of its own (2e-5 USD). Each answer costs 2.5e-5 USD. LiteLLM counts the spend and,
once a provider (or deployment) has reached its budget, leaves it out of routing: the
group's fallback serves. The BFF records what served (span, headers) and reports LiteLLM's
budget state at GET /api/usage/provider-budgets; it counts and enforces nothing itself.

Then two LiteLLM instances sharing one Redis (compose's shape): what one spends, the other
routes by.
"""

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from bff.clickhouse import ClickHouseStore
from conftest import LITELLM_BIN, MASTER_KEY, OUTPUT, ROOT, SERVICE_KEY, Bff, BffFactory, _test_policy_file, chat_body
from support.fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, FakeProviderState
from support.redis_server import RedisServer
from support.servers import ProcessServer, ThreadServer, free_port, wait_until
from support.spans import spans_for

FIXTURE = ROOT / "tests" / "fixtures" / "litellm.provider-budgets.yaml"
ANSWER_COST = Decimal(PROMPT_TOKENS) * Decimal("0.000001") + Decimal(COMPLETION_TOKENS) * Decimal("0.000002")
OPENAI_LIMIT = Decimal("0.00004")  # two answers are served, the third falls back
DAY = timedelta(days=1)
LITELLM_REDIS_SYNC_SECONDS = 1  # litellm.constants.DEFAULT_REDIS_SYNC_INTERVAL


def _usd(text: str | float) -> Decimal:
    """LiteLLM counts in floats (2.4999999999999998e-05 an answer): compared to the picodollar."""
    return Decimal(str(text)).quantize(Decimal("1e-12"))


def _environment_without_redis() -> dict[str, str]:
    """This machine's environment minus any REDIS_*: LiteLLM must start and count in memory without them."""
    return {name: value for name, value in os.environ.items() if not name.startswith("REDIS_")}


def _start_litellm(fake_url: str, name: str, extra: dict[str, str] | None = None) -> tuple[ProcessServer, str]:
    port = free_port()
    process = ProcessServer(
        [str(LITELLM_BIN), "--config", str(FIXTURE), "--host", "127.0.0.1", "--port", str(port)],
        {
            "FAKE_PROVIDER_URL": fake_url + "/v1",
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **(extra or {}),
        },
        OUTPUT / f"litellm-{name}.log",
        base_env=_environment_without_redis(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200, 120, f"LiteLLM ({name})")
    except TimeoutError:
        process.stop()
        raise RuntimeError(f"LiteLLM ({name}) did not start:\n" + process.log_tail()) from None
    return process, url


@pytest.fixture(scope="module")
def budget_litellm(fake_provider: tuple[ThreadServer, FakeProviderState]) -> Iterator[str]:
    process, url = _start_litellm(fake_provider[0].url, "provider-budgets")
    yield url
    process.stop()


def _without_downgrades(policy: Any) -> Any:
    """The policy minus its downgrade targets (`downgrade_to` names a model of the suites' LiteLLM, not of this one)."""
    if isinstance(policy, dict):
        return {key: _without_downgrades(value) for key, value in policy.items() if key not in ("when_exceeded", "downgrade_to")}
    if isinstance(policy, list):
        return [_without_downgrades(item) for item in policy]
    return policy


@pytest.fixture(scope="module")
def budget_bff(bff_factory: BffFactory, budget_litellm: str) -> Bff:
    policy = OUTPUT / "policy.provider-budgets.yaml"
    policy.write_text(yaml.safe_dump(_without_downgrades(yaml.safe_load(_test_policy_file().read_text()))))
    return bff_factory(litellm_url=budget_litellm, policy_file=policy)


def _budgets(bff: Bff, admin_token: str) -> dict[str, dict[str, Any]]:
    with bff.client(admin_token) as admin:
        answer = admin.get("/api/usage/provider-budgets")
    assert answer.status_code == 200, answer.text
    return {entry["provider"]: entry for entry in answer.json()["providers"]}


def _wait_for_spend(bff: Bff, admin_token: str, provider: str, spent: Decimal, timeout: float = 10) -> dict[str, Any]:
    """LiteLLM counts an answer's cost in its success callback, just after answering."""
    deadline = time.monotonic() + timeout
    while True:
        state = _budgets(bff, admin_token)[provider]
        if _usd(state["spent_usd"]) >= spent or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def _marked(provider_state: FakeProviderState, marker: str) -> list[str]:
    """The upstream models the fake provider was asked for with this prompt, in order."""
    return [call.body["model"] for call in provider_state.calls if marker in str(call.body.get("messages"))]


def _chat(client: httpx.Client, model: str, marker: str, request_id: str) -> httpx.Response:
    body = chat_body(model, messages=[{"role": "user", "content": marker}])
    return client.post("/v1/chat/completions", json=body, headers={"x-request-id": request_id})


def test_a_provider_over_its_budget_is_skipped_for_the_fallback(
    budget_bff: Bff, provider_state: FakeProviderState, user_token: str, admin_token: str, clickhouse_url: str
) -> None:
    before = _budgets(budget_bff, admin_token)
    assert _usd(before["openai"]["spent_usd"]) == 0 and before["openai"]["exceeded"] is False
    run = uuid.uuid4().hex[:8]
    served: list[tuple[str, str, str, float]] = []  # (request id, group, fallbacks, seconds)
    with budget_bff.client(user_token) as client:
        for index in range(3):
            marker, request_id = f"budget-{run}-{index}", f"pb-{run}-{index}"
            started = time.monotonic()
            answer = _chat(client, "budget-primary", marker, request_id)
            elapsed = time.monotonic() - started
            assert answer.status_code == 200, answer.text
            served.append((request_id, answer.headers["x-litellm-model-group"], answer.headers["x-litellm-attempted-fallbacks"], elapsed))
            expected_upstream = ["budget-primary"] if index < 2 else ["budget-fallback"]
            assert _marked(provider_state, marker) == expected_upstream  # over budget: openai never asked
            if index < 2:
                _wait_for_spend(budget_bff, admin_token, "openai", ANSWER_COST * (index + 1))
    assert [(group, fallbacks) for _, group, fallbacks, _ in served] == [
        ("budget-primary", "0"),
        ("budget-primary", "0"),
        ("budget-fallback", "1"),
    ]
    print(f"\nseconds per answer (primary, primary, fallback): {[round(s[3], 2) for s in served]}")

    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    spans = {request_id: spans_for(store, request_id)[0]["SpanAttributes"] for request_id, *_ in served}
    first, fell_back = spans[served[0][0]], spans[served[2][0]]
    assert first["gen_ai.response.model"] == "budget-primary" and first["gateway.fallbacks"] == "0"
    assert first["gen_ai.provider.name"] == "openai"
    assert fell_back["gen_ai.request.model"] == "budget-primary"
    assert fell_back["gen_ai.response.model"] == "budget-fallback" and fell_back["gateway.fallbacks"] == "1"
    assert fell_back["gen_ai.provider.name"] == "hosted_vllm"
    assert _usd(fell_back["gateway.cost.usd"]) == ANSWER_COST  # the fallback's answer, billed as usual

    after = _wait_for_spend(budget_bff, admin_token, "openai", ANSWER_COST * 2)
    assert _usd(after["spent_usd"]) == ANSWER_COST * 2 and after["limit_usd"] == "0.00004"
    assert after["exceeded"] is True and _usd(after["remaining_usd"]) == OPENAI_LIMIT - ANSWER_COST * 2
    fallback_provider = _wait_for_spend(budget_bff, admin_token, "hosted_vllm", ANSWER_COST)
    assert _usd(fallback_provider["spent_usd"]) >= ANSWER_COST and fallback_provider["exceeded"] is False


def test_a_deployment_over_its_own_budget_is_skipped_for_the_fallback(
    budget_bff: Bff, provider_state: FakeProviderState, admin_token: str
) -> None:
    run = uuid.uuid4().hex[:8]
    with budget_bff.client(admin_token) as client:
        first = _chat(client, "budget-capped", f"capped-{run}-0", f"pc-{run}-0")
        assert first.status_code == 200 and first.headers["x-litellm-model-group"] == "budget-capped"
        deadline = time.monotonic() + 10
        while True:  # the deployment's spend is counted just after the answer; nothing reports it, so ask again
            marker = f"capped-{run}-next-{time.monotonic_ns()}"
            answer = _chat(client, "budget-capped", marker, f"pc-{run}-{time.monotonic_ns()}")
            assert answer.status_code == 200, answer.text
            if answer.headers["x-litellm-model-group"] == "budget-fallback" or time.monotonic() > deadline:
                break
    assert answer.headers["x-litellm-model-group"] == "budget-fallback"
    assert answer.headers["x-litellm-attempted-fallbacks"] == "1"
    assert _marked(provider_state, marker) == ["budget-fallback"]
    # hosted_vllm as a provider still has room: only the deployment was over its budget
    assert _budgets(budget_bff, admin_token)["hosted_vllm"]["exceeded"] is False


def test_provider_budgets_route_shape_and_access(budget_bff: Bff, user_token: str, admin_token: str) -> None:
    budgets = _budgets(budget_bff, admin_token)
    assert sorted(budgets) == ["hosted_vllm", "openai"]
    now = datetime.now(UTC)
    for entry in budgets.values():
        assert set(entry) == {"provider", "period", "limit_usd", "spent_usd", "remaining_usd", "exceeded", "resets_at"}
        assert entry["period"] == "1d"
        resets_at = datetime.fromisoformat(entry["resets_at"])
        # LiteLLM in memory reports now + an expiry timestamp (decades ahead); the route reads the expiry back
        assert now < resets_at <= now + DAY + timedelta(seconds=5), entry
    assert budgets["hosted_vllm"]["limit_usd"] == "100"
    with budget_bff.client(user_token) as user:
        refused = user.get("/api/usage/provider-budgets")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    with budget_bff.client(SERVICE_KEY) as service:
        assert service.get("/api/usage/provider-budgets").status_code == 403
    with httpx.Client(base_url=budget_bff.url) as anonymous:
        assert anonymous.get("/api/usage/provider-budgets").status_code == 401


def test_without_provider_budgets_in_litellm_the_route_says_so(bff: Bff, admin_token: str) -> None:
    """The suites' LiteLLM (tests/fixtures/litellm.test.yaml) has no provider budgets."""
    with bff.client(admin_token) as admin:
        answer = admin.get("/api/usage/provider-budgets")
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "provider_budgets_unavailable" and "litellm" in error["message"].lower()
    assert "provider_budget_config" not in answer.text and "Traceback" not in answer.text  # nothing of LiteLLM's text


def test_unreachable_litellm_is_a_503(bff_factory: BffFactory, admin_token: str) -> None:
    fresh = bff_factory(litellm_url=f"http://127.0.0.1:{free_port()}")
    with fresh.client(admin_token) as admin:
        answer = admin.get("/api/usage/provider-budgets")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "provider_budgets_unavailable"


# --- two LiteLLM instances, one Redis: the router state compose shares -------------------------


@pytest.fixture(scope="module")
def litellm_redis() -> Iterator[RedisServer]:
    """A Redis of LiteLLM's own, as compose's `redis` service (the suites' Redis holds the BFFs' state)."""
    server = RedisServer(OUTPUT / "redis-litellm")
    yield server
    server.stop()


def _direct_chat(url: str, model: str, marker: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": marker}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)


def _provider_state(url: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/provider/budgets", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["providers"])


def test_two_litellm_instances_share_provider_spend_through_redis(
    fake_provider: tuple[ThreadServer, FakeProviderState], litellm_redis: RedisServer
) -> None:
    provider_state = fake_provider[1]
    shared = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(litellm_redis.port)}
    first, first_url = _start_litellm(fake_provider[0].url, "redis-a", shared)
    try:
        second, second_url = _start_litellm(fake_provider[0].url, "redis-b", shared)
        try:
            run = uuid.uuid4().hex[:8]
            for index in range(2):  # both answers on the first instance: openai's spend reaches 5e-5 >= 4e-5
                answer = _direct_chat(first_url, "budget-primary", f"shared-{run}-{index}")
                assert answer.status_code == 200 and answer.headers["x-litellm-model-group"] == "budget-primary"
                time.sleep(0.1)
            client = redis.Redis.from_url(litellm_redis.url)
            wait_until(lambda: _usd(float(client.get("provider_spend:openai:1d") or 0)) >= ANSWER_COST * 2, 10, "spend in Redis")
            # the other instance reports Redis's figure at once (GET /provider/budgets reads Redis) ...
            wait_until(lambda: _usd(_provider_state(second_url)["openai"]["spend"]) >= ANSWER_COST * 2, 10, "spend on the other instance")
            # ... but routes on its in-memory copy, which budget_limiter.py refreshes from Redis every
            # DEFAULT_REDIS_SYNC_INTERVAL (1 s): a request sent before then was served by the primary
            time.sleep(3 * LITELLM_REDIS_SYNC_SECONDS)
            marker = f"shared-{run}-other"
            other = _direct_chat(second_url, "budget-primary", marker)
            assert other.status_code == 200, other.text
            assert other.headers["x-litellm-model-group"] == "budget-fallback"
            assert other.headers["x-litellm-attempted-fallbacks"] == "1"
            assert _marked(provider_state, marker) == ["budget-fallback"]
            # with Redis LiteLLM reports the real reset (the key's seconds left), within a day
            reset = datetime.fromisoformat(_provider_state(second_url)["openai"]["budget_reset_at"])
            now = datetime.now(UTC)
            assert now < reset <= now + DAY
            client.close()
        finally:
            second.stop()
    finally:
        first.stop()


# --- the shipped configuration ---------------------------------------------------------------


def _router_settings(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text())["router_settings"])


def test_shipped_provider_budgets_are_complete_and_redis_comes_from_the_environment() -> None:
    settings = _router_settings(ROOT / "config" / "litellm.yaml")
    budgets = settings["provider_budget_config"]
    assert {"openai", "anthropic", "gemini"} <= set(budgets)
    for provider, budget in budgets.items():
        # LiteLLM 1.106 leaves a provider with a time_period but no budget_limit out of routing altogether
        assert isinstance(budget.get("budget_limit"), int | float) and budget["budget_limit"] > 0, provider
        assert isinstance(budget.get("time_period"), str) and budget["time_period"], provider
    assert settings["redis_host"] == "os.environ/REDIS_HOST" and settings["redis_port"] == "os.environ/REDIS_PORT"
    for deployment in yaml.safe_load((ROOT / "config" / "litellm.yaml").read_text())["model_list"]:
        params = deployment["litellm_params"]
        assert ("max_budget" in params) == ("budget_duration" in params), deployment["model_name"]
    # litellm.dev.yaml includes litellm.yaml, whose router_settings would replace the dev file's (config_includes.py)
    assert "router_settings" not in yaml.safe_load((ROOT / "config" / "litellm.dev.yaml").read_text())
