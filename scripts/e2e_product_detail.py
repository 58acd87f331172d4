#!/usr/bin/env python3
"""Plays the product-detail flow end to end through the BFF's public routes only.

    .venv/bin/python scripts/e2e_product_detail.py [--base-url http://127.0.0.1:8080]
        [--token TOKEN] [--product "..."] [--out .data/e2e_product_detail.json]

Six steps: brand summary, brief, section plan, copy (POST /api/llm/generate, each task's
model picked by config/routing.yaml), one hero image (POST /api/media/image/generate, then
GET /api/media/jobs/{id} until it is done) and a review of the copy. Writes one JSON file
with all six results and the image URL, and prints each step's time and cost. Against the
local stack (scripts/dev.sh, GENERATOR_MODE=mock) it needs no provider key and no ComfyUI.

The token: --token, else $BFF_TOKEN, else a dev user token from scripts/dev_token.py.
Exit status 1 on the first failed step, with the BFF's error message.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
IMAGE_TIMEOUT_SECONDS = 120.0
TEXT_STEPS = (
    ("brand_summary", "Summarise the brand behind this product in three sentences:\n{product}"),
    ("brief", "Write a creative brief for the product page.\nProduct: {product}\nBrand summary: {brand_summary}"),
    ("section_plan", "Plan the sections of the product detail page from this brief:\n{brief}"),
    ("copywriter", "Write the copy for each section.\nPlan:\n{section_plan}\nBrief:\n{brief}"),
)
REVIEW_PROMPT = "Review this product page copy for accuracy, tone and clarity; list concrete fixes:\n{copywriter}"
HERO_PROMPT = "Hero image for a product page: {product}, studio lighting, clean background"


class StepFailed(Exception):
    pass


def default_token() -> str:
    if os.environ.get("BFF_TOKEN"):
        return os.environ["BFF_TOKEN"]
    minted = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dev_token.py"), "--role", "user"], capture_output=True, text=True
    )
    if minted.returncode != 0:
        raise StepFailed(f"no --token or BFF_TOKEN, and no dev token: {minted.stderr.strip()}")
    return minted.stdout.strip()


def checked(response: httpx.Response, step: str) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise StepFailed(f"{step}: HTTP {response.status_code}: {message}")
    return response.json()


def text_step(client: httpx.Client, task: str, prompt: str) -> dict[str, Any]:
    started = time.perf_counter()
    answer = checked(client.post("/api/llm/generate", json={"task": task, "prompt": prompt}), task)
    return {
        "step": task,
        "model": answer["model"],
        "mode": answer["mode"],
        "content": answer["content"],
        "usage": answer["usage"],
        "cost_usd": answer["cost"]["total_cost"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def image_step(client: httpx.Client, prompt: str) -> dict[str, Any]:
    started = time.perf_counter()
    job = checked(client.post("/api/media/image/generate", json={"task": "hero_image", "prompt": prompt}), "hero_image")
    deadline = time.monotonic() + IMAGE_TIMEOUT_SECONDS
    while True:
        state = checked(client.get(f"/api/media/jobs/{job['job_id']}"), "hero_image")
        if state["status"] == "succeeded":
            break
        if state["status"] in ("failed", "timed_out") or time.monotonic() > deadline:
            raise StepFailed(f"hero_image: job {job['job_id']} ended {state['status']}: {state.get('error')}")
        time.sleep(0.2)
    images = state["images"]
    return {
        "step": "hero_image",
        "job_id": job["job_id"],
        "workflow": state.get("workflow"),
        "image_url": str(client.base_url.join(images[0])),
        "cost_usd": state.get("cost_usd", 0.0),
        "seconds": round(time.perf_counter() - started, 3),
    }


def run(base_url: str, token: str, product: str) -> dict[str, Any]:
    results: dict[str, Any] = {"product": product}
    steps: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for task, template in TEXT_STEPS:
            step = text_step(client, task, template.format(**results))
            results[task] = step["content"]
            steps.append(step)
        image = image_step(client, HERO_PROMPT.format(product=product))
        steps.append(image)
        steps.append(text_step(client, "reviewer", REVIEW_PROMPT.format(**results)))
    return {
        "product": product,
        "steps": steps,
        "image_url": image["image_url"],
        "total_cost_usd": sum(step["cost_usd"] for step in steps),
        "total_seconds": round(sum(step["seconds"] for step in steps), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("BFF_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=None)
    parser.add_argument("--product", default="Ceramic pour-over coffee dripper, hand-glazed, 2-4 cups")
    parser.add_argument("--out", type=Path, default=ROOT / ".data" / "e2e_product_detail.json")
    args = parser.parse_args()
    try:
        report = run(args.base_url, args.token or default_token(), args.product)
    except (StepFailed, httpx.HTTPError) as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    for step in report["steps"]:
        print(f"{step['step']:<14} {step['seconds']:>7.2f} s   ${step['cost_usd']:.6f}   {step.get('model') or step.get('workflow')}")
    print(f"{'total':<14} {report['total_seconds']:>7.2f} s   ${report['total_cost_usd']:.6f}")
    print(f"image  {report['image_url']}\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
