"""Past a budget: `downgrade` serves the cheaper model and records it, `refuse` and the hard
ceiling answer 429 budget_exceeded; one daily budget across two BFFs sharing one Redis."""

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from bff.app import create_app
from bff.clickhouse import ClickHouseStore
from bff.policy.model import PolicyError
from conftest import ROOT, Bff, BffFactory, chat_body
from support.redis_server import RedisServer
from support.spans import spans_for
from test_usage import _as_user

EMBED = {"model": "fake-embed", "input": "hello"}


def _policy(tmp_path: Path, budgets: dict[str, Any], name: str = "policy.yaml") -> Path:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["roles"]["user"]["models"]["tiers"] = ["mini", "premium"]
    policy["budgets"]["users"] = budgets
    policy.pop("limits", None)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(policy))
    return path


def _cost(bff: Bff, model: str) -> Decimal:
    """What one call of `model` costs (LiteLLM's own price), measured as a throwaway user."""
    with _as_user(bff, f"price-{uuid.uuid4().hex[:8]}") as client:
        answer = client.post("/v1/chat/completions", json=chat_body(model))
    assert answer.status_code == 200, answer.text
    return Decimal(answer.headers["x-litellm-response-cost"])


def test_downgrade_serves_the_cheaper_model_until_the_hard_ceiling(
    bff_factory: BffFactory, tmp_path: Path, clickhouse_url: str
) -> None:
    priced = bff_factory(policy_file=_policy(tmp_path, {}, "priced.yaml"))
    premium, mini = _cost(priced, "fake-premium"), _cost(priced, "fake-mini")
    assert mini < premium
    user = f"down-{uuid.uuid4().hex[:8]}"
    # the first premium call passes the limit; two mini calls fit under the ceiling, the third does not
    budget = {"daily_usd": str(premium / 2), "when_exceeded": "downgrade", "downgrade_to": "fake-mini",
              "hard_daily_usd": str(premium + mini * Decimal("1.5"))}
    downgrading = bff_factory(policy_file=_policy(tmp_path, {user: budget}), budget_cache_seconds=0)
    with _as_user(downgrading, user) as client:
        first = client.post("/v1/chat/completions", json=chat_body("fake-premium"))
        assert first.status_code == 200 and "x-gateway-downgraded-from" not in first.headers
        served = [client.post("/v1/chat/completions", json=chat_body("fake-premium")) for _ in range(2)]
        embeddings = client.post("/v1/embeddings", json=EMBED)
        ceiling = client.post("/v1/chat/completions", json=chat_body("fake-premium"))
    for answer in served:
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gateway-downgraded-from"] == "fake-premium"
        assert answer.headers["x-litellm-model-group"] == "fake-mini"
        assert Decimal(answer.headers["x-litellm-response-cost"]) == mini
    # only chat has a cheaper stand-in: other paid operations are refused past the limit
    assert embeddings.status_code == 429 and embeddings.json()["error"]["code"] == "budget_exceeded"
    assert ceiling.status_code == 429 and ceiling.json()["error"]["code"] == "budget_exceeded"
    assert ceiling.headers["x-should-retry"] == "false" and int(ceiling.headers["retry-after"]) > 0
    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    span = spans_for(store, served[0].headers["x-request-id"])[0]["SpanAttributes"]
    assert span["gateway.downgraded_from"] == "fake-premium"
    assert span["gen_ai.response.model"] == "fake-mini"
    assert span["gen_ai.request.model"] == "fake-premium"


def test_refuse_answers_budget_exceeded(bff: Bff, bff_factory: BffFactory, tmp_path: Path) -> None:
    user = f"refuse-{uuid.uuid4().hex[:8]}"
    refusing = bff_factory(policy_file=_policy(tmp_path, {user: {"daily_usd": "0.000001"}}), budget_cache_seconds=0)
    with _as_user(refusing, user) as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        refused = client.post("/v1/chat/completions", json=chat_body())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert "x-gateway-downgraded-from" not in refused.headers


@pytest.mark.parametrize(
    ("downgrade_to", "problem"),
    [("no-such-model", "is not a LiteLLM model"), ("fake-premium", "does not cost less"), ("fake-embed", "not a chat model")],
)
def test_a_bad_downgrade_target_stops_the_start(
    litellm_url: str, bff: Bff, tmp_path: Path, downgrade_to: str, problem: str
) -> None:
    path = _policy(tmp_path, {})
    policy = yaml.safe_load(path.read_text())
    policy["budgets"]["roles"]["user"].update({"when_exceeded": "downgrade", "downgrade_to": downgrade_to})
    path.write_text(yaml.safe_dump(policy))
    settings = bff.settings.model_copy(update={"policy_file": path})
    with pytest.raises(PolicyError, match=problem), TestClient(create_app(settings)):
        pass


def test_two_bffs_sharing_redis_enforce_one_daily_budget(
    bff: Bff, bff_factory: BffFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    mini = _cost(bff, "fake-mini")
    # three calls fit (the third starts below the limit), the fourth must be refused, on either BFF
    limit = str(mini * Decimal("2.5"))

    def run(pair: tuple[Bff, Bff], user: str) -> list[int]:
        statuses = []
        for number in range(5):
            with _as_user(pair[number % 2], user) as client:
                statuses.append(client.post("/v1/chat/completions", json=chat_body()).status_code)
        return statuses

    shared_user, apart_user = f"shared-{uuid.uuid4().hex[:8]}", f"apart-{uuid.uuid4().hex[:8]}"
    # each BFF reuses its ClickHouse snapshot for 10 s: only the shared ledger tells B what A just spent
    shared_policy = _policy(tmp_path, {shared_user: {"daily_usd": limit}}, "shared.yaml")
    shared = tuple(bff_factory(policy_file=shared_policy, redis_url=redis_server.url, budget_cache_seconds=10) for _ in range(2))
    assert run(shared, shared_user) == [200, 200, 200, 429, 429]  # type: ignore[arg-type]
    # the contrast: without Redis each BFF counts only its own unsettled costs, and lets more through
    apart_policy = _policy(tmp_path, {apart_user: {"daily_usd": limit}}, "apart.yaml")
    apart = tuple(bff_factory(policy_file=apart_policy, budget_cache_seconds=10) for _ in range(2))
    assert run(apart, apart_user).count(200) > 3  # type: ignore[arg-type]
