"""A real Open-WebUI in front of a real BFF, LiteLLM and the loopback fake provider.

Open-WebUI needs the BFF's URL (its OpenAI connection) and the BFF needs Open-WebUI's
(its role source, ROLE_SOURCE=api) and an Open-WebUI admin's API key (OPEN_WEBUI_ADMIN_TOKEN,
for the groups of the users Open-WebUI's connection forwards), which exists only once
Open-WebUI runs. So both ports are picked first, Open-WebUI starts with the BFF's URL, its
first sign-up (the admin) switches API keys on and creates one, and only then does the
shared BFF start on its port. Both share the test secrets; Open-WebUI's other settings come
from webui-integration/openwebui.env, with every BFF URL in it pointed at the test BFF, every
matching key set to the service key, and the deployment's model names replaced by the test
LiteLLM's fake deployments. The shared BFF serves one A/B experiment (EXPERIMENT, on an alias
no other test asks for) from an experiments file in the run's temp directory.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from bff.app import create_app
from bff.clickhouse import ClickHouseStore
from bff.serving import uvicorn_options
from bff.settings import Settings
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
from support.servers import ThreadServer, free_port

# Resolved: Open-WebUI runs in its data directory, so a relative OPENWEBUI_BIN would not be found there.
OPENWEBUI_BIN = Path(os.environ.get("OPENWEBUI_BIN", ROOT / ".venv-openwebui" / "bin" / "open-webui")).absolute()
ENV_FILE = ROOT / "webui-integration" / "openwebui.env"
ROLE_CACHE_TTL_SECONDS = 2.0
BFF_IN_ENV_FILE = "http://bff:8080"  # how openwebui.env names the BFF (compose)
# openwebui.env's model names -> the test LiteLLM's deployments (tests/fixtures/litellm.test.yaml)
TEST_MODELS = {
    "RAG_EMBEDDING_MODEL": "fake-embed",
    "AUDIO_STT_MODEL": "fake-stt",
    "AUDIO_TTS_MODEL": "fake-tts",
    "IMAGE_EDIT_MODEL": "fake-image-edit",
    "IMAGE_GENERATION_MODEL": "mock-image",  # the BFF's mock workflow (no ComfyUI)
}
# The shared BFF's one experiment (tests/openwebui/test_openwebui_experiment.py): an alias no other
# test of the suite asks for (LiteLLM's `fast` -> fake-mini), so their chats are served as asked.
EXPERIMENT = "openwebui-fast-ab"
EXPERIMENT_TARGET = "fast"
EXPERIMENT_VARIANTS = [
    {"name": "control", "model": "fake-mini", "weight": 50},
    {"name": "mock", "model": "fake-mock", "weight": 50},
]


def write_experiments(path: Path) -> Path:
    """An experiments file with EXPERIMENT active from an hour ago to a day from now."""
    now = datetime.now(UTC)
    experiment = {
        "name": EXPERIMENT,
        "description": f"fake-mock against fake-mini for {EXPERIMENT_TARGET} (the real Open-WebUI suite)",
        "target": {"model": EXPERIMENT_TARGET},
        "variants": EXPERIMENT_VARIANTS,
        "start": (now - timedelta(hours=1)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
    }
    path.write_text(yaml.safe_dump({"experiments": [experiment]}))
    return path


def key_of(base_url_variable: str) -> str:
    """OPENAI_API_BASE_URL -> OPENAI_API_KEY, RAG_OPENAI_API_BASE_URL -> RAG_OPENAI_API_KEY, ..."""
    return base_url_variable.replace("_BASE_URL", "_KEY")


def openwebui_settings(env: dict[str, str], bff_url: str) -> dict[str, str]:
    """openwebui.env for this run: each BFF URL pointed at the test BFF, its key the service key."""
    settings = dict(env)
    for name, value in env.items():
        if value.startswith(BFF_IN_ENV_FILE):
            settings[name] = bff_url + value.removeprefix(BFF_IN_ENV_FILE)
            settings[key_of(name)] = SERVICE_KEY
    return {**settings, **TEST_MODELS}


@dataclass
class Stack:
    openwebui: OpenWebUIApi
    bff: Bff  # Open-WebUI's connection; its OPEN_WEBUI_ADMIN_TOKEN is the admin's API key
    tokenless_bff: Bff  # the same settings without OPEN_WEBUI_ADMIN_TOKEN (Open-WebUI does not call it)
    admin: Account  # the first sign-up
    settings: dict[str, str]  # Open-WebUI's environment


@pytest.fixture(scope="session")
def stack(bff_factory: BffFactory, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    if not OPENWEBUI_BIN.exists():
        pytest.fail(f"{OPENWEBUI_BIN} is missing: run scripts/test.sh --openwebui, which installs it")
    port = free_port()
    bff_port = free_port()  # the shared BFF listens here once the admin's API key exists
    experiments = write_experiments(tmp_path_factory.mktemp("experiments") / "experiments.yaml")
    tokenless = bff_factory(
        experiments_file=experiments,
        role_source="api",
        open_webui_url=f"http://127.0.0.1:{port}",
        role_cache_ttl_seconds=ROLE_CACHE_TTL_SECONDS,
        webui_secret_key=WEBUI_SECRET,
        forward_user_info_header_jwt_secret=FORWARD_SECRET,
        bff_service_keys=[SERVICE_KEY],
    )
    data_dir = tmp_path_factory.mktemp("openwebui-data")
    settings = {
        **openwebui_settings(read_env_file(ENV_FILE), f"http://127.0.0.1:{bff_port}"),
        **OFFLINE,
        # What differs from a deployment: this run's secrets and data directory, and image edits
        # switched on (openwebui.env leaves them off: they need a LiteLLM image_edit model).
        "ENABLE_IMAGE_EDIT": "true",
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": FORWARD_SECRET,
        "WEBUI_SECRET_KEY": WEBUI_SECRET,
        "DATA_DIR": str(data_dir),
        "HF_HOME": str(data_dir / "huggingface"),
    }
    OUTPUT.mkdir(parents=True, exist_ok=True)
    process = OpenWebUIProcess(OPENWEBUI_BIN, port, settings, OUTPUT / "openwebui.log")
    try:
        seconds = process.wait_ready()
        openwebui = OpenWebUIApi(process.url)
        admin = openwebui.sign_up("Admin", "admin@example.test")  # the first sign-up on an empty Open-WebUI
        assert admin.role == "admin"
        # An API key rather than the admin's session token: it does not expire with JWT_EXPIRES_IN
        # nor end with a sign-out, and Open-WebUI 0.12.4 accepts it on the admin-only
        # GET /api/v1/users/{id}/groups once ENABLE_API_KEYS is on (off by default).
        openwebui.enable_api_keys(admin)
        admin_key = SecretStr(openwebui.create_api_key(admin))
        bff_settings = tokenless.settings.model_copy(update={"open_webui_admin_token": admin_key})
        server = ThreadServer(create_app(bff_settings), port=bff_port, options=uvicorn_options(bff_settings)).start()
    except BaseException:
        process.stop()
        raise
    _report(request.config, f"Open-WebUI ready in {seconds:.1f} s (log: {process.log_path})")
    shared = Bff(url=server.url, settings=bff_settings)
    yield Stack(openwebui=openwebui, bff=shared, tokenless_bff=tokenless, admin=admin, settings=settings)
    server.stop()
    process.stop()


@contextmanager
def serving(settings: Settings) -> Iterator[Bff]:
    """A BFF of a test's own, stopped when the test is done: a feedback poller that outlived its
    tests would go on comparing the shared ClickHouse with this Open-WebUI and tombstone the
    ratings later tests store from elsewhere (the fake Open-WebUI's)."""
    server = ThreadServer(create_app(settings), options=uvicorn_options(settings)).start()
    try:
        yield Bff(url=server.url, settings=settings)
    finally:
        server.stop()


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
    """The first sign-up on an empty Open-WebUI: its admin (the shared BFF holds their API key)."""
    return stack.admin


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
