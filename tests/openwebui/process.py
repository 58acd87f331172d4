"""Runs a real Open-WebUI (`open-webui serve` from .venv-openwebui) on loopback.

Its settings are webui-integration/openwebui.env plus what a test run must change:
where the BFF is, the test secrets, a fresh data directory, nothing fetched from outside.
"""

import os
import time
from pathlib import Path

import httpx

from support.servers import ProcessServer

# Start-up imports torch, transformers and chromadb: tens of seconds on 2 cores.
START_TIMEOUT_SECONDS = 300.0

# Open-WebUI must start with no network: no model hub, no update check, no telemetry.
OFFLINE = {
    "OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
    "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
    "WHISPER_MODEL_AUTO_UPDATE": "false",
    "ENABLE_VERSION_UPDATE_CHECK": "false",
    "SCARF_NO_ANALYTICS": "true",
    "DO_NOT_TRACK": "true",
    "ANONYMIZED_TELEMETRY": "false",
}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose's env_file reads them (no quoting); # starts a comment line."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


class OpenWebUIProcess(ProcessServer):
    """`open-webui serve` with its output in a log file."""

    stop_seconds = 20.0

    def __init__(self, binary: Path, port: int, settings: dict[str, str], log_path: Path):
        self.url = f"http://127.0.0.1:{port}"
        # A clean environment: a developer's shell (DATABASE_URL, OPENAI_API_KEY, ...) must not leak in.
        base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
        args = [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port)]
        super().__init__(args, settings, log_path, base_env=base, cwd=Path(settings["DATA_DIR"]))

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> float:
        """Seconds until /ready answered 200 (start-up done, database reachable)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"Open-WebUI exited with {self.process.returncode}:\n{self.log_tail(60)}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.5)
        raise RuntimeError(f"Open-WebUI not ready within {timeout:.0f} s:\n{self.log_tail(60)}")
