"""webui-integration/openwebui.env against the installed open-webui 0.12.4 and the running one.

Every variable in the file is one Open-WebUI reads; every BFF URL in it has its key beside it;
and, once started with the file, Open-WebUI's effective settings send embeddings, audio, images
and image edits to the BFF with the service key (not to api.openai.com, where the variables it
leaves unset would send them).
"""

import re
from pathlib import Path

import yaml

from conftest import ROOT, SERVICE_KEY
from openwebui.api import Account
from openwebui.conftest import BFF_IN_ENV_FILE, ENV_FILE, OPENWEBUI_BIN, TEST_MODELS, Stack, key_of
from openwebui.process import read_env_file

# Read from the environment by Open-WebUI's own code: os.getenv('X', ...), os.environ.get('X'), os.environ['X']
ENV_READ = re.compile(r"""os\.(?:getenv|environ\.get)\(\s*['"]([A-Z][A-Z0-9_]*)['"]|os\.environ\[\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\]""")
# Where the BFF must be called instead of OpenAI (each one defaults to api.openai.com in 0.12.4)
BFF_CONNECTIONS = (
    "OPENAI_API_BASE_URL",
    "IMAGES_OPENAI_API_BASE_URL",
    "IMAGES_EDIT_OPENAI_API_BASE_URL",
    "RAG_OPENAI_API_BASE_URL",
    "AUDIO_STT_OPENAI_API_BASE_URL",
    "AUDIO_TTS_OPENAI_API_BASE_URL",
)


def _open_webui_source() -> Path:
    (package,) = (OPENWEBUI_BIN.parent.parent / "lib").glob("python3*/site-packages/open_webui")
    return package


def test_every_variable_in_openwebui_env_is_read_by_open_webui() -> None:
    read: set[str] = set()
    for path in _open_webui_source().rglob("*.py"):
        for match in ENV_READ.finditer(path.read_text(errors="replace")):
            read.add(match.group(1) or match.group(2))
    assert len(read) > 500  # the scan found Open-WebUI's settings
    unknown = sorted(set(read_env_file(ENV_FILE)) - read)
    assert not unknown, f"openwebui.env sets variables open-webui 0.12.4 never reads: {unknown}"


def test_every_connection_points_at_the_bff_with_its_own_key_and_a_model() -> None:
    env = read_env_file(ENV_FILE)
    for name in BFF_CONNECTIONS:
        assert env.get(name, "").startswith(BFF_IN_ENV_FILE + "/v1"), f"{name} must be the BFF's /v1 (unset: api.openai.com)"
        assert key_of(name) in env, f"{key_of(name)} missing beside {name} (unset: OpenAI's empty key)"
    assert env["RAG_EMBEDDING_ENGINE"] == env["AUDIO_STT_ENGINE"] == env["AUDIO_TTS_ENGINE"] == env["IMAGE_EDIT_ENGINE"] == "openai"
    for name in TEST_MODELS:
        assert env.get(name), f"{name} must name a model (AUDIO_STT_MODEL='' is refused by the BFF)"


def test_compose_fills_every_secret_openwebui_env_leaves_empty() -> None:
    env = read_env_file(ENV_FILE)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    filled = compose["services"]["open-webui"]["environment"]
    empty = sorted(name for name, value in env.items() if value == "")
    missing = [name for name in empty if name not in filled]
    assert not missing, f"docker-compose.yml's open-webui environment must fill {missing} (from .env)"
    for name in BFF_CONNECTIONS:
        assert filled[key_of(name)] == filled["OPENAI_API_KEY"], f"{key_of(name)} must be the service key"


def test_the_running_open_webui_calls_the_bff_for_embeddings_audio_and_images(stack: Stack, admin: Account) -> None:
    bff = f"{stack.bff.url}/v1"

    def config(path: str) -> dict:
        answer = stack.openwebui.call(admin, "GET", path)
        assert answer.status_code == 200, answer.text
        return answer.json()

    embedding = config("/api/v1/retrieval/embedding")
    assert (embedding["RAG_EMBEDDING_ENGINE"], embedding["RAG_EMBEDDING_MODEL"]) == ("openai", TEST_MODELS["RAG_EMBEDDING_MODEL"])
    assert embedding["openai_config"] == {"url": bff, "key": SERVICE_KEY}
    assert embedding["RAG_EMBEDDING_BATCH_SIZE"] > 1

    audio = config("/api/v1/audio/config")
    assert (audio["stt"]["ENGINE"], audio["stt"]["MODEL"], audio["stt"]["OPENAI_API_BASE_URL"], audio["stt"]["OPENAI_API_KEY"]) == (
        "openai", TEST_MODELS["AUDIO_STT_MODEL"], bff, SERVICE_KEY
    )
    assert (audio["tts"]["ENGINE"], audio["tts"]["MODEL"], audio["tts"]["OPENAI_API_BASE_URL"], audio["tts"]["OPENAI_API_KEY"]) == (
        "openai", TEST_MODELS["AUDIO_TTS_MODEL"], bff, SERVICE_KEY
    )

    images = config("/api/v1/images/config")
    assert (images["IMAGE_GENERATION_ENGINE"], images["IMAGES_OPENAI_API_BASE_URL"], images["IMAGES_OPENAI_API_KEY"]) == ("openai", bff, SERVICE_KEY)
    assert (images["IMAGE_EDIT_ENGINE"], images["IMAGES_EDIT_OPENAI_API_BASE_URL"], images["IMAGES_EDIT_OPENAI_API_KEY"]) == ("openai", bff, SERVICE_KEY)
