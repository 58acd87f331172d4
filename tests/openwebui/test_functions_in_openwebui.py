"""The gateway's Open-WebUI functions loaded and called by Open-WebUI 0.12.4's own code
(opt-in suite: scripts/test.sh --openwebui installs .venv-openwebui)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import FORWARD_SECRET, ROOT, SERVICE_KEY, Bff
from test_webui_functions import FUNCTIONS, _fresh, _png, mock_bff  # noqa: F401 (the "mock" fixture)

OPENWEBUI_PYTHON = ROOT / ".venv-openwebui" / "bin" / "python"


@pytest.mark.slow
def test_open_webuis_own_loader_accepts_and_calls_them(mock: Bff, tmp_path: Path) -> None:
    """The real open_webui 0.12.4 code (from .venv-openwebui) loads both files and calls them."""
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATA_DIR": str(tmp_path), "FROM_INIT_PY": "true",
        "WEBUI_SECRET_KEY": "loader-test", "ENABLE_PERSISTENT_CONFIG": "false", "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true",
        "ANONYMIZED_TELEMETRY": "false",
    }
    script = ROOT / "tests" / "support" / "openwebui_real_loader.py"
    done = subprocess.run(
        [str(OPENWEBUI_PYTHON), str(script), str(FUNCTIONS), mock.url, SERVICE_KEY, FORWARD_SECRET, _fresh("real")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["tool_manifest"]["title"] == "ComfyUI workflows (LLM gateway)"
    (spec,) = result["tool_specs"]
    assert spec["name"] == "run_image_workflow" and spec["parameters"]["required"] == ["prompt"]
    assert not any(name.startswith("__") for name in spec["parameters"]["properties"])
    assert "Generated 1 image with the workflow mock-image" in result["tool_result"]
    files = [event["data"]["files"] for event in result["tool_events"] if event["type"] == "files"]
    assert len(files) == 1 and _png(files[0][0]["url"]) == (96, 64)
    assert result["action_kind"] == "action" and result["action_manifest"]["icon_url"].startswith("data:image/svg+xml")
    (message,) = result["action_result"]["messages"]
    assert message["id"] == "m1" and message["content"].startswith("Hi there.\n\n**Your LLM gateway usage** (UTC)")
    assert "- daily: " in message["content"] and " of $5.00 (spent " in message["content"]  # numbers: see below
