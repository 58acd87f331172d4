"""The shipped LiteLLM configurations: they start with no provider key and match the policy."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bff.policy.model import load_policy
from conftest import LITELLM_BIN, MASTER_KEY, OUTPUT, ROOT
from support.otlp_receiver import OtlpReceiver
from support.otlp_receiver import attributes as otlp_attributes
from support.servers import ProcessServer, free_port, wait_until

PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OLLAMA_BASE_URL")


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


@pytest.fixture(scope="module")
def dev_litellm(monkeypatch_module: pytest.MonkeyPatch, collector: OtlpReceiver) -> Iterator[str]:
    """LiteLLM with the shipped config (plus mocks), exporting its spans as compose sets it up."""
    for name in PROVIDER_KEYS:  # the local stack must work with none of them
        monkeypatch_module.delenv(name, raising=False)
    port = free_port()
    process = ProcessServer(
        [str(LITELLM_BIN), "--config", str(ROOT / "config" / "litellm.dev.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        {
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OTEL_EXPORTER": "otlp_http",
            "OTEL_ENDPOINT": f"{collector.url}/v1/traces",
        },
        OUTPUT / "litellm-dev.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200, 120, "LiteLLM (dev config)")
        yield url
    finally:
        process.stop()


def test_litellm_spans_join_the_gateway_trace_without_content(dev_litellm: str, collector: OtlpReceiver) -> None:
    """What compose relies on: LiteLLM's spans reach the collector under the BFF's trace, with no text."""
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    prompt = f"confidential-prompt-{uuid.uuid4().hex}"
    answer = httpx.post(
        f"{dev_litellm}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "traceparent": f"00-{trace_id}-{parent}-01"},
        json={"model": "mock-mini", "messages": [{"role": "user", "content": prompt}], "user": "user-7"},
        timeout=30,
    )
    assert answer.status_code == 200
    completion = answer.json()["choices"][0]["message"]["content"]
    spans = collector.wait_for(lambda _, span: span.trace_id.hex() == trace_id, timeout=15)
    assert spans, "no LiteLLM span reached the receiver"
    assert {service for service, _ in spans} == {"litellm"}
    assert any(span.parent_span_id.hex() == parent for _, span in spans)  # joined under the caller's span
    for _, span in spans:
        values = " ".join(otlp_attributes(span).values())
        assert prompt not in values and completion not in values, span.name


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


def test_production_config_starts_without_keys_and_lists_models_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose's default: config/litellm.yaml alone (a missing key disables only its models)."""
    for name in PROVIDER_KEYS:
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    process = ProcessServer(
        [str(LITELLM_BIN), "--config", str(ROOT / "config" / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        {"LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OTEL_SDK_DISABLED": "true"},
        OUTPUT / "litellm-prod.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200, 120, "LiteLLM (production config)")
        listed = {m["id"] for m in httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()["data"]}
    finally:
        process.stop()
    config = yaml.safe_load((ROOT / "config" / "litellm.yaml").read_text())
    expected = {d["model_name"] for d in config["model_list"]} | set(config["router_settings"]["model_group_alias"])
    assert {"fast", "smart"} <= expected
    assert listed == expected


@pytest.mark.parametrize("name", ["litellm.yaml", "litellm.dev.yaml"])
def test_every_deployment_has_known_gateway_metadata(name: str) -> None:
    tiers = set(load_policy(ROOT / "config" / "policy.yaml").tiers)
    for deployment in _deployments(ROOT / "config" / name):
        info = deployment.get("model_info", {})
        assert info.get("gateway_tier") in tiers, deployment["model_name"]
        assert info.get("gateway_capabilities"), deployment["model_name"]
        assert info.get("gateway_description"), deployment["model_name"]
        assert "tier" not in info, "LiteLLM reserves model_info.tier (free|paid)"
