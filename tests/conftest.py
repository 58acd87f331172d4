"""Session fixtures: a fake provider, a real LiteLLM proxy, a fake Open-WebUI, real BFFs.

Nothing in the chat path is mocked: requests go test -> BFF (uvicorn) -> LiteLLM
(its own process, tests/fixtures/litellm.test.yaml) -> loopback fake provider.
"""

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from bff.app import create_app
from bff.serving import uvicorn_options
from bff.settings import Settings
from support.fake_openai import FakeProviderState, create_fake_provider
from support.fake_openwebui import FakeOpenWebUIState, create_fake_openwebui
from support.redis_server import RedisServer
from support.servers import ProcessServer, ThreadServer, free_port, wait_until
from support.tokens import session_token

ROOT = Path(__file__).resolve().parent.parent
# TEST_OUTPUT_DIR lets two pytest runs share a checkout (each needs its own embedded ClickHouse path).
OUTPUT = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "tests" / "output")).resolve()
LITELLM_BIN = Path(os.environ.get("LITELLM_BIN", ROOT / ".venv-litellm" / "bin" / "litellm"))

MASTER_KEY = "sk-test-master-key-0123456789"
WEBUI_SECRET = "test-webui-secret-key"
FORWARD_SECRET = "test-forward-user-jwt-secret"
SERVICE_KEY = "svc-test-service-key-0123456789"


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[tuple[ThreadServer, FakeProviderState]]:
    state = FakeProviderState()
    # Idle connections kept longer than LiteLLM's pool keeps them (aiohttp: 15 s), as a real
    # provider does: with uvicorn's 5 s LiteLLM now and then sent on a connection being closed
    # ("Connection error", answered 500).
    server = ThreadServer(create_fake_provider(state), keepalive_seconds=75).start()
    yield server, state
    server.stop()


@pytest.fixture(scope="session")
def provider_state(fake_provider: tuple[ThreadServer, FakeProviderState]) -> FakeProviderState:
    return fake_provider[1]


@pytest.fixture(scope="session")
def litellm_url(fake_provider: tuple[ThreadServer, FakeProviderState]) -> Iterator[str]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = ProcessServer(
        [str(LITELLM_BIN), "--config", str(ROOT / "tests" / "fixtures" / "litellm.test.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        {
            "FAKE_PROVIDER_URL": fake_provider[0].url + "/v1",
            "FAKE_PROVIDER_ROOT": fake_provider[0].url,  # Cohere rerank posts to {api_base}/v2/rerank
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        },
        OUTPUT / "litellm.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200, 120, "LiteLLM proxy")
    except TimeoutError:
        process.stop()
        raise RuntimeError("LiteLLM did not start:\n" + process.log_tail()) from None
    yield url
    process.stop()


@pytest.fixture(scope="session")
def openwebui() -> Iterator[tuple[ThreadServer, FakeOpenWebUIState]]:
    state = FakeOpenWebUIState(secret=WEBUI_SECRET)
    state.add_user("admin-1", "admin")
    state.add_user("user-1", "user")
    state.add_user("pending-1", "pending")
    state.add_user("weird-1", "superuser")
    server = ThreadServer(create_fake_openwebui(state)).start()
    yield server, state
    server.stop()


@pytest.fixture(scope="session")
def openwebui_state(openwebui: tuple[ThreadServer, FakeOpenWebUIState]) -> FakeOpenWebUIState:
    return openwebui[1]


@dataclass
class Bff:
    url: str
    settings: Settings
    server: ThreadServer | None = None

    def stop(self) -> None:
        """Stops it before the session ends (a BFF with background work, e.g. a feedback poller)."""
        if self.server is not None:
            self.server.stop()

    def client(self, token: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Client:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers={**auth, **(headers or {})}, timeout=30, **kwargs)


BffFactory = Callable[..., Bff]


def _test_policy_file() -> Path:
    """config/policy.yaml without its rate limits: the suites call as the same few users far
    more often than 60 times a minute. Tests of limits write policies of their own."""
    path = OUTPUT / "policy.test.yaml"
    policy = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    policy.pop("limits", None)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture(scope="session")
def clickhouse_url() -> str:
    """One embedded ClickHouse per test run (chdb allows one data path per process)."""
    path = OUTPUT / "clickhouse"
    shutil.rmtree(path, ignore_errors=True)
    return f"chdb://{path}"


@pytest.fixture(scope="session")
def bff_factory(
    litellm_url: str, openwebui: tuple[ThreadServer, FakeOpenWebUIState], clickhouse_url: str
) -> Iterator[BffFactory]:
    """Starts a real BFF (uvicorn, own port) with the test defaults plus overrides."""
    servers: list[ThreadServer] = []

    def start(**overrides: Any) -> Bff:
        values: dict[str, Any] = {
            "litellm_url": litellm_url,
            "litellm_master_key": MASTER_KEY,
            "webui_secret_key": WEBUI_SECRET,
            "open_webui_url": openwebui[0].url,
            "role_source": "api",
            "role_cache_ttl_seconds": 30.0,
            "bff_service_keys": [SERVICE_KEY],
            "forward_user_info_header_jwt_secret": FORWARD_SECRET,
            "policy_file": _test_policy_file(),
            "routing_file": ROOT / "tests" / "fixtures" / "routing.test.yaml",
            "experiments_file": ROOT / "config" / "experiments.yaml",
            "comfyui_workflows_dir": ROOT / "config" / "comfyui",
            "media_dir": OUTPUT / "media",
            "upstream_timeout_seconds": 20.0,
            "clickhouse_url": clickhouse_url,
            "clickhouse_schema_dir": ROOT / "config" / "clickhouse",
            "span_export_interval_ms": 100,
            **overrides,
        }
        settings = Settings(**values)
        # as bff/__main__.py runs it: the prefix, keep-alive, the bounded request head (bff/serving.py)
        server = ThreadServer(create_app(settings), options=uvicorn_options(settings)).start()
        servers.append(server)
        return Bff(url=server.url, settings=settings, server=server)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real Redis (redis-server) per test run; tests use their own user ids, or flush()."""
    server = RedisServer(OUTPUT / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bff(bff_factory: BffFactory) -> Bff:
    return bff_factory()


@pytest.fixture(scope="session")
def user_token() -> str:
    return session_token("user-1", WEBUI_SECRET)


@pytest.fixture(scope="session")
def admin_token() -> str:
    return session_token("admin-1", WEBUI_SECRET)


def chat_body(model: str = "fake-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **extra}
