"""The shipped LiteLLM configurations: they start with no provider key and match the policy."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import LITELLM_BIN, MASTER_KEY, OUTPUT, ROOT
from support.servers import ProcessServer, free_port, wait_until

from bff.policy.model import load_policy

PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OLLAMA_BASE_URL")


@pytest.fixture(scope="module")
def dev_litellm(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[str]:
    for name in PROVIDER_KEYS:  # the local stack must work with none of them
        monkeypatch_module.delenv(name, raising=False)
    port = free_port()
    process = ProcessServer(
        [str(LITELLM_BIN), "--config", str(ROOT / "config" / "litellm.dev.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        {"LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        OUTPUT / "litellm-dev.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200, 120, "LiteLLM (dev config)")
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _deployments(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["model_list"]


def test_dev_config_starts_without_keys_and_lists_everything(dev_litellm: str) -> None:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    listed = {m["id"] for m in httpx.get(f"{dev_litellm}/v1/models", headers=headers).json()["data"]}
    configured = {d["model_name"] for d in _deployments(ROOT / "config" / "litellm.yaml")}
    mocks = {d["model_name"] for d in _deployments(ROOT / "config" / "litellm.dev.yaml")}
    aliases = set(yaml.safe_load((ROOT / "config" / "litellm.yaml").read_text())["router_settings"]["model_group_alias"])
    assert configured | mocks | aliases <= listed
    answer = httpx.post(
        f"{dev_litellm}/v1/chat/completions",
        headers=headers,
        json={"model": "mock-mini", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert answer.status_code == 200
    assert "mock-mini" in answer.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("name", ["litellm.yaml", "litellm.dev.yaml"])
def test_every_deployment_has_known_gateway_metadata(name: str) -> None:
    tiers = set(load_policy(ROOT / "config" / "policy.yaml").tiers)
    for deployment in _deployments(ROOT / "config" / name):
        info = deployment.get("model_info", {})
        assert info.get("gateway_tier") in tiers, deployment["model_name"]
        assert info.get("gateway_capabilities"), deployment["model_name"]
        assert info.get("gateway_description"), deployment["model_name"]
        assert "tier" not in info, "LiteLLM reserves model_info.tier (free|paid)"
