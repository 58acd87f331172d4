"""Readiness does not flap: LiteLLM frozen for one probe (a busy machine) keeps the BFF ready;
silent for longer than READINESS_GRACE_SECONDS, it is reported down, and back up when it answers."""

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import LITELLM_BIN, MASTER_KEY, OUTPUT, ROOT, BffFactory
from support.servers import ProcessServer, free_port, wait_until

GRACE_SECONDS = 8.0


@pytest.fixture
def own_litellm(fake_provider: object) -> Iterator[tuple[ProcessServer, str]]:
    """A LiteLLM of this test's own, since it is frozen (SIGSTOP) for a while."""
    port = free_port()
    process = ProcessServer(
        [str(LITELLM_BIN), "--config", str(ROOT / "tests" / "fixtures" / "litellm.test.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        {
            "FAKE_PROVIDER_URL": fake_provider[0].url + "/v1",  # type: ignore[index]
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OTEL_SDK_DISABLED": "true",
        },
        OUTPUT / "litellm-readiness.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200, 120, "LiteLLM proxy")
        yield process, url
    finally:
        os.kill(process.process.pid, signal.SIGCONT)
        process.stop()


@pytest.mark.slow
def test_one_slow_probe_does_not_flip_readiness(own_litellm: tuple[ProcessServer, str], bff_factory: BffFactory) -> None:
    process, url = own_litellm
    bff = bff_factory(litellm_url=url, readiness_grace_seconds=GRACE_SECONDS)
    with bff.client() as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        frozen_at = time.monotonic()
        os.kill(process.process.pid, signal.SIGSTOP)
        try:
            slow = client.get("/health/ready")  # the probe times out (3 s) within the grace
            assert slow.status_code == 200 and slow.json()["dependencies"]["litellm"]["status"] == "ok"
            assert time.monotonic() - frozen_at >= 3
            time.sleep(max(0.0, GRACE_SECONDS - (time.monotonic() - frozen_at)))
            down = client.get("/health/ready")
            assert down.status_code == 503 and down.json()["dependencies"]["litellm"]["status"] == "down"
        finally:
            os.kill(process.process.pid, signal.SIGCONT)
        assert client.get("/health/ready").json()["status"] == "ready"
