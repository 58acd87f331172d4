"""Policy file validation, role -> model access, and the catalog route."""

from pathlib import Path

import pytest

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
