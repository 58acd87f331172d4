"""Policy file validation, role -> model access, and the catalog route."""

from pathlib import Path

import pytest

from bff.identity.principal import AuthMethod, Principal, Role
from bff.policy.model import PolicyError, load_policy
from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, Bff, chat_body
from support.tokens import forwarded_user_jwt

VALID = """
tiers: [mini, standard, premium]
roles:
  user:
    permissions: [chat]
    models: {tiers: [mini], include: ["special-*"], exclude: ["special-secret"]}
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tiers: [mini]\nroles:\n  user:\n    permissions: [chat, fly]\n    models: {}\n", "roles.user.permissions.1"),
        ("tiers: [mini]\nroles:\n  user:\n    permissions: [chat]\n    models: {tiers: [gold]}\n", "unknown tiers ['gold']"),
        ("tiers: [mini]\nroles:\n  admin: {permissions: [chat], models: {}}\n  user: {permissions: [], models: {}}\n", "roles.admin"),
        ("tiers: [mini]\nroles: {}\n", "roles.user"),
        ("tiers: []\nroles:\n  user: {permissions: [], models: {}}\n", "tiers"),
        ("tiers: [mini\n", "cannot read"),
        ("tiers: [mini]\nroles:\n  user: {permissions: [], models: {tier: [mini]}}\n", "roles.user.models.tier"),
    ],
)
def test_invalid_policy_files_fail_with_a_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert problem in str(error.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


def test_model_access_rules(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID)
    access = load_policy(path).roles.user.models
    assert access.allows("any-mini", "mini")
    assert not access.allows("any-premium", "premium")
    assert access.allows("special-thing", "premium")
    assert not access.allows("special-secret", "mini")
    assert not access.allows("untiered", None)


def test_shipped_policy_is_valid() -> None:
    policy = load_policy(ROOT / "config" / "policy.yaml")
    assert policy.roles.user.models.tiers == ["mini", "standard"]


def test_models_are_filtered_by_role(bff: Bff, user_token: str, admin_token: str) -> None:
    with bff.client(user_token) as client:
        user_models = {m["id"] for m in client.get("/v1/models").json()["data"]}
    with bff.client(admin_token) as client:
        admin_models = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert "fake-mini" in user_models and "cheap" in user_models
    assert "fake-premium" not in user_models and "top" not in user_models
    assert {"fake-premium", "top"} <= admin_models
    assert user_models < admin_models


def test_open_webui_gets_every_chat_model_and_the_policy_refuses_the_chat(bff: Bff, admin_token: str) -> None:
    """Open-WebUI shares one model table between its users: a per-user list would hide admins' models."""
    user = {"id": "user-1", "email": "u@example.test", "name": "U", "role": "user"}
    headers = {"X-OpenWebUI-User-Jwt": forwarded_user_jwt(user, FORWARD_SECRET)}
    with bff.client(admin_token) as admin:
        everything = admin.get("/v1/models").json()["data"]
    with bff.client(SERVICE_KEY, headers=headers) as open_webui:
        listed = {m["id"] for m in open_webui.get("/v1/models").json()["data"]}
        refused = open_webui.post("/v1/chat/completions", json=chat_body("fake-premium"))
    # every chat model (its list is its chat picker), not only the user's; no embedding or audio model
    assert listed == {m["id"] for m in everything if m["mode"] == "chat"} and "fake-premium" in listed
    assert "fake-embed" not in listed and "fake-tts" not in listed
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_alias_is_judged_by_its_target(bff: Bff, user_token: str, admin_token: str) -> None:
    with bff.client(user_token) as client:
        assert client.post("/v1/chat/completions", json=chat_body("cheap")).status_code == 200
        assert client.post("/v1/chat/completions", json=chat_body("top")).status_code == 403
    with bff.client(admin_token) as client:
        product = client.post("/api/chat/completions", json=chat_body("top"))
    assert product.status_code == 200
    assert product.json()["model"] == "fake-premium"


def test_catalog_route(bff: Bff, user_token: str) -> None:
    with bff.client(user_token) as client:
        catalog = client.get("/api/models").json()
        premium_only = client.get("/api/models", params={"tier": "premium"}).json()
        bad = client.get("/api/models", params={"tier": "gold"})
    by_id = {m["id"]: m for m in catalog["data"]}
    mini = by_id["fake-mini"]
    assert mini["tier"] == "mini" and mini["allowed"] is True
    assert mini["input_price_per_1m"] == pytest.approx(1.0) and mini["output_price_per_1m"] == pytest.approx(2.0)
    assert mini["capabilities"] == ["chat"] and mini["description"] == "Fake mini model"
    assert by_id["fake-premium"]["allowed"] is False
    assert by_id["top"]["group"] == "fake-premium"
    assert {m["id"] for m in premium_only["data"]} == {"fake-premium", "top"}
    assert bad.status_code == 400 and "'tier'" in bad.json()["error"]["message"]
    assert catalog["tiers"] == ["mini", "standard", "advanced", "premium"]


def test_service_key_cannot_use_product_routes(bff: Bff) -> None:
    with bff.client(SERVICE_KEY) as client:
        assert client.post("/api/chat/completions", json=chat_body()).status_code == 403


GROUPS = """
tiers: [mini, standard, advanced, premium]
roles:
  user:
    permissions: [chat, usage.own]
    models: {tiers: [mini], exclude: ["mini-secret"]}
groups:
  premium:
    permissions: [images]
    models: {tiers: [premium]}
    budget: {daily_usd: 20, when_exceeded: downgrade, downgrade_to: cheap}
    limits: {requests_per_minute: 120}
  interns:
    models: {include: ["mini-secret"]}
    budget: {daily_usd: 1, monthly_usd: 3}
    limits: {requests_per_minute: 10, concurrent_requests: null}
budgets:
  roles:
    user: {daily_usd: 5, monthly_usd: 50}
  users:
    u-capped: {daily_usd: 2}
limits:
  roles:
    user: {requests_per_minute: 60, concurrent_requests: 4}
  users:
    u-capped: {requests_per_minute: 5}
"""


def _principal(user_id: str, *groups: str, role: str = "user") -> Principal:
    return Principal(user_id=user_id, role=Role(role), groups=tuple(sorted(groups)), auth=AuthMethod.session_token)


def test_groups_add_to_the_role_and_the_larger_budget_and_limit_win(tmp_path: Path) -> None:
    from decimal import Decimal

    from bff.policy.access import AccessPolicy
    from bff.policy.model import Permission, WhenExceeded

    path = tmp_path / "policy.yaml"
    path.write_text(GROUPS)
    access = AccessPolicy(load_policy(path))
    plain, premium, both = (access.effective(_principal(*p)) for p in (("u1",), ("u2", "premium"), ("u3", "premium", "interns")))
    assert plain.permissions == {Permission.chat, Permission.usage_own}
    assert premium.permissions == {Permission.chat, Permission.usage_own, Permission.images}
    assert not plain.allows_model("top", "premium") and premium.allows_model("top", "premium")
    # a group's include is not undone by the role's exclude: each source narrows only itself
    assert not premium.allows_model("mini-secret", "mini") and both.allows_model("mini-secret", "mini")
    assert (plain.budget.daily_usd, premium.budget.daily_usd, both.budget.daily_usd) == (Decimal(5), Decimal(20), Decimal(20))
    assert both.budget.monthly_usd == Decimal(50)  # the interns' smaller monthly budget does not shrink the role's
    assert premium.budget.when_exceeded is WhenExceeded.downgrade and premium.budget.downgrade_to == "cheap"
    assert plain.budget.when_exceeded is None
    assert (plain.limits.requests_per_minute, premium.limits.requests_per_minute) == (60, 120)
    assert both.limits.concurrent_requests is None  # the interns' explicit null: unlimited wins
    assert premium.limits.concurrent_requests == 4
    # users: entries override single fields, after the groups
    capped = access.effective(_principal("u-capped", "premium"))
    assert capped.budget.daily_usd == Decimal(2) and capped.limits.requests_per_minute == 5
    assert capped.budget.when_exceeded is WhenExceeded.downgrade
    # unknown group names add nothing; admins have everything
    assert access.effective(_principal("u4", "nobody")) == plain
    admin = access.effective(_principal("a1", role="admin"))
    assert admin.permissions == set(Permission) and admin.allows_model("anything", None)


@pytest.mark.parametrize(
    ("budget", "problem"),
    [
        ("{when_exceeded: downgrade}", "needs downgrade_to"),
        ("{daily_usd: 5, hard_daily_usd: 4}", "hard_daily_usd must not be below daily_usd"),
        ("{when_exceeded: sometimes}", "when_exceeded"),
    ],
)
def test_invalid_degradation_settings(tmp_path: Path, budget: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID + f"budgets:\n  roles:\n    user: {budget}\n")
    with pytest.raises(PolicyError, match=problem):
        load_policy(path)


def test_invalid_alert_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID + "budgets:\n  alerts: [0.8, 1.2]\n")
    with pytest.raises(PolicyError, match="fractions between 0 and 1"):
        load_policy(path)
