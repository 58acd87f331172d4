"""Per-user budgets trip at the right request, answer with headers, and survive a restart."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from bff.clickhouse import ClickHouseStore
from bff.policy import spend_ledger
from bff.policy.access import AccessPolicy
from bff.policy.budgets import BudgetGuard
from bff.policy.model import load_policy
from bff.policy.spend_ledger import MemoryLedger
from conftest import ROOT, Bff, BffFactory, chat_body
from test_usage import _as_user, _wait_for

# Two fake-mini calls cost 2 x 0.000025 (tests/fixtures/litellm.test.yaml); the limit sits between one and two.
DAILY_LIMIT = "0.00004"


def _policy_with_budget(tmp_path: Path, user_id: str) -> Path:
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["budgets"]["users"] = {user_id: {"daily_usd": DAILY_LIMIT}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.mark.parametrize("cache_seconds", [0.0, 10.0], ids=["no cache", "cached spend"])
def test_budget_trips_at_the_right_request(bff_factory: BffFactory, tmp_path: Path, cache_seconds: float) -> None:
    user_id = f"budget-{uuid.uuid4().hex[:8]}"
    bff = bff_factory(policy_file=_policy_with_budget(tmp_path, user_id), budget_cache_seconds=cache_seconds)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    with _as_user(bff, user_id) as client:
        first = client.post("/v1/chat/completions", json=chat_body())
        time.sleep(0.5)  # let the first span reach ClickHouse: spend must not be counted twice
        second = client.post("/v1/chat/completions", json=chat_body())
        third = client.post("/v1/chat/completions", json=chat_body())
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert first.headers["x-budget-limit-usd"] == DAILY_LIMIT
    assert first.headers["x-budget-remaining-usd"] == DAILY_LIMIT
    remaining = float(second.headers["x-budget-remaining-usd"])
    assert remaining == pytest.approx(0.00004 - 0.000025)
    assert datetime.fromisoformat(first.headers["x-budget-reset"]) == tomorrow
    assert first.headers["x-budget-period"] == "daily"
    error = third.json()["error"]
    assert error["code"] == "budget_exceeded" and "daily budget" in error["message"]
    assert 0 < int(third.headers["retry-after"]) <= 86400
    assert third.headers["x-should-retry"] == "false"  # or openai-node retries it 3 times
    assert third.headers["x-budget-remaining-usd"] == "0"


def test_budget_survives_a_restart(bff_factory: BffFactory, tmp_path: Path, admin_token: str) -> None:
    user_id = f"budget-{uuid.uuid4().hex[:8]}"
    policy = _policy_with_budget(tmp_path, user_id)
    first_process = bff_factory(policy_file=policy)
    with _as_user(first_process, user_id) as client:
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with first_process.client(admin_token) as admin:
        _wait_for(admin, {"user": user_id}, 2)
    restarted = bff_factory(policy_file=policy)  # knows nothing but what ClickHouse holds
    with _as_user(restarted, user_id) as client:
        refused = client.post("/v1/chat/completions", json=chat_body())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"


def test_unlimited_callers_get_no_budget_headers(bff: Bff, admin_token: str, user_token: str) -> None:
    with bff.client(admin_token) as admin:
        assert "x-budget-limit-usd" not in admin.get("/v1/models").headers
    with bff.client(user_token) as user:  # the shipped policy gives users 5 USD a day
        headers = user.get("/v1/models").headers
    assert headers["x-budget-limit-usd"] == "5" and headers["x-budget-period"] == "daily"


def test_budget_override_fields_merge_over_the_role() -> None:
    from bff.policy.model import Budget

    merged = Budget(daily_usd=5, monthly_usd=50).overridden_by(Budget(daily_usd=1))
    assert merged.daily_usd == 1 and merged.monthly_usd == 50


def test_budget_endpoint_shows_every_period(bff_factory: BffFactory, tmp_path: Path, admin_token: str) -> None:
    user_id = f"budget-{uuid.uuid4().hex[:8]}"
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy["budgets"]["users"] = {user_id: {"daily_usd": "1", "monthly_usd": "10"}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    bff = bff_factory(policy_file=path, budget_cache_seconds=0)
    with _as_user(bff, user_id) as client:
        cost = client.post("/v1/chat/completions", json=chat_body()).headers["x-litellm-response-cost"]
        answer = client.get("/api/usage/budget")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["user_id"], body["role"], body["limited"]) == (user_id, "user", True)
    periods = {period["period"]: period for period in body["periods"]}
    assert (periods["daily"]["limit_usd"], periods["monthly"]["limit_usd"]) == ("1", "10")
    for period in periods.values():
        assert float(period["spent_usd"]) == pytest.approx(float(cost))
        assert float(period["remaining_usd"]) == pytest.approx(float(period["limit_usd"]) - float(cost))
    assert datetime.fromisoformat(periods["daily"]["resets_at"]) > datetime.now(UTC)
    with bff.client(admin_token) as admin:
        unlimited = admin.get("/api/usage/budget").json()
    assert unlimited["limited"] is False and unlimited["periods"] == [] and unlimited["role"] == "admin"


def test_otlp_export_counts_a_cost_once_before_and_after_the_collector_stores_it(clickhouse_url: str) -> None:
    """With OTLP export the BFF hears nothing back from the collector: a finished cost counts
    until its row is in ClickHouse, and only the row after (it once counted twice for 15 s)."""
    import asyncio
    from decimal import Decimal

    from bff.identity.principal import AuthMethod, Principal, Role
    from bff.pipeline.call import Call
    from bff.settings import Settings
    from bff.telemetry.tracing import Telemetry

    store = ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
    guard = BudgetGuard(AccessPolicy(load_policy(ROOT / "config" / "policy.yaml")), store, 0, MemoryLedger(delivery_reports=False))
    # The collector's stand-in: the very rows its clickhouse exporter writes, into the store the budget reads.
    settings = Settings(litellm_master_key="k", webui_secret_key="s", clickhouse_url=clickhouse_url)  # type: ignore[call-arg]
    collector = Telemetry(settings, store, on_delivered=lambda ids: None)
    user_id = f"otlp-{uuid.uuid4().hex[:8]}"
    principal = Principal(user_id=user_id, role=Role.user, auth=AuthMethod.session_token)
    call = Call(request_id=uuid.uuid4().hex)
    call.admit(principal)
    call.model = call.model_group = "fake-mini"
    call.cost_usd = Decimal("0.001")
    span = collector.start("chat", "/v1/chat/completions", {}, call.started_ns)
    asyncio.run(guard.finished(user_id, Telemetry.span_id(span), call.cost_usd))  # as pipeline/context.charge does
    try:
        before = asyncio.run(guard.periods(principal))[0].spent_usd
        Telemetry.finish(span, call.span_attributes(200), 200)
        collector.flush()  # the collector wrote the row
        after = asyncio.run(guard.periods(principal))[0].spent_usd
    finally:
        collector.shutdown()
    assert before == after == Decimal("0.001")


def test_costs_waiting_for_the_store_are_kept_per_user_and_swept() -> None:
    # Each request reads its caller's waiting costs only; those of users who stopped calling
    # go once delivered and old, or after UNSTORED_SECONDS if the store never got them.
    import asyncio

    ledger = MemoryLedger(delivery_reports=True)
    today = datetime.now(UTC).date()
    for user, span, cost in (("user-a", "span-1", 1), ("user-a", "span-2", 2), ("user-b", "span-3", 3)):
        asyncio.run(ledger.add(user, span, today, Decimal(cost)))
    ledger.delivered(["span-1"])
    assert ledger.users() == {"user-a": {"span-1", "span-2"}, "user-b": {"span-3"}}
    now = time.monotonic()
    ledger.sweep(now + spend_ledger.FORGET_AFTER_SECONDS + 1)
    assert ledger.users() == {"user-a": {"span-2"}, "user-b": {"span-3"}}
    ledger.sweep(now + spend_ledger.UNSTORED_SECONDS + 1)
    assert ledger.users() == {}
