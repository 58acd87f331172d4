"""scripts/e2e_product_detail.py against a real BFF in mock mode: six steps, one JSON file."""

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, BffFactory


def test_product_detail_flow_in_mock_mode(bff_factory: BffFactory, user_token: str, tmp_path: Path) -> None:
    bff = bff_factory(generator_mode="mock", media_dir=tmp_path / "media")
    out = tmp_path / "result.json"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "e2e_product_detail.py"), "--base-url", bff.url, "--token", user_token, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    assert elapsed < 30
    report = json.loads(out.read_text())
    steps = [step["step"] for step in report["steps"]]
    assert steps == ["brand_summary", "brief", "section_plan", "copywriter", "hero_image", "reviewer"]
    text_steps = [step for step in report["steps"] if step["step"] != "hero_image"]
    assert all(step["mode"] == "mock" and step["model"] == "fake-mock" and step["content"] for step in text_steps)
    assert report["total_cost_usd"] > 0 and "total" in run.stdout
    image = report["steps"][4]
    assert image["workflow"] == "mock-image" and image["cost_usd"] >= 0
    with bff.client(user_token) as client:
        png = client.get(report["image_url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_failure_is_reported_with_the_bff_message(bff_factory: BffFactory, tmp_path: Path) -> None:
    bff = bff_factory(generator_mode="mock", media_dir=tmp_path / "media")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "e2e_product_detail.py"), "--base-url", bff.url, "--token", "bad-token"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "brand_summary: HTTP 401" in run.stderr
