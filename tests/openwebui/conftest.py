"""A real Open-WebUI in front of a real BFF, LiteLLM and the loopback fake provider.

Open-WebUI needs the BFF's URL (its OpenAI connection) and the BFF needs Open-WebUI's
(its role source, ROLE_SOURCE=api), so Open-WebUI's port is picked first. Both share the
test secrets; Open-WebUI's other settings come from webui-integration/openwebui.env.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bff.clickhouse import ClickHouseStore
from conftest import (
    FORWARD_SECRET,
    OUTPUT,
    ROOT,
    SERVICE_KEY,
    WEBUI_SECRET,
    Bff,
    BffFactory,
)
from openwebui.api import Account, OpenWebUIApi
from openwebui.process import OFFLINE, OpenWebUIProcess, read_env_file
from support.servers import free_port

OPENWEBUI_BIN = Path(os.environ.get("OPENWEBUI_BIN", ROOT / ".venv-openwebui" / "bin" / "open-webui"))
ENV_FILE = ROOT / "webui-integration" / "openwebui.env"
ROLE_CACHE_TTL_SECONDS = 2.0


@dataclass
class Stack:
    openwebui: OpenWebUIApi
    bff: Bff


@pytest.fixture(scope="session")
def stack(bff_factory: BffFactory, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    if not OPENWEBUI_BIN.exists():
        pytest.fail(f"{OPENWEBUI_BIN} is missing: run scripts/test.sh --openwebui, which installs it")
    port = free_port()
    bff = bff_factory(
        role_source="api",
        open_webui_url=f"http://127.0.0.1:{port}",
        role_cache_ttl_seconds=ROLE_CACHE_TTL_SECONDS,
        webui_secret_key=WEBUI_SECRET,
        forward_user_info_header_jwt_secret=FORWARD_SECRET,
        bff_service_keys=[SERVICE_KEY],
    )
    data_dir = tmp_path_factory.mktemp("openwebui-data")
    settings = {
        **read_env_file(ENV_FILE),
        **OFFLINE,
        # What differs from a deployment: this run's BFF, secrets and data directory.
        "OPENAI_API_BASE_URL": f"{bff.url}/v1",
        "OPENAI_API_KEY": SERVICE_KEY,
        "IMAGES_OPENAI_API_BASE_URL": f"{bff.url}/v1",
        "IMAGES_OPENAI_API_KEY": SERVICE_KEY,
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": FORWARD_SECRET,
        "WEBUI_SECRET_KEY": WEBUI_SECRET,
        "DATA_DIR": str(data_dir),
        "HF_HOME": str(data_dir / "huggingface"),
    }
    OUTPUT.mkdir(parents=True, exist_ok=True)
    process = OpenWebUIProcess(OPENWEBUI_BIN, port, settings, OUTPUT / "openwebui.log")
    try:
        seconds = process.wait_ready()
    except RuntimeError:
        process.stop()
        raise
    _report(request.config, f"Open-WebUI ready in {seconds:.1f} s (log: {process.log_path})")
    yield Stack(openwebui=OpenWebUIApi(process.url), bff=bff)
    process.stop()


def _report(config: pytest.Config, line: str) -> None:
    """One line on the terminal, even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Account:
    """The first sign-up on an empty Open-WebUI: its admin."""
    account = stack.openwebui.sign_up("Admin", "admin@example.test")
    assert account.role == "admin"
    return account


@pytest.fixture(scope="session")
def user(stack: Stack, admin: Account) -> Account:
    """A normal user the admin added."""
    account = stack.openwebui.add_user(admin, "User", "user@example.test", role="user")
    assert account.role == "user"
    return account


@pytest.fixture(scope="session")
def store(clickhouse_url: str) -> ClickHouseStore:
    """The embedded ClickHouse the BFF exports its spans into (same path, same process)."""
    return ClickHouseStore(clickhouse_url, ROOT / "config" / "clickhouse")
