#!/usr/bin/env python3
"""Prepares an Open-WebUI 0.12.4 for the gateway through its own admin API; safe to run again.

1. Registers the BFF's chat models in Open-WebUI's model table with public read access.
   Open-WebUI keeps no row for a model that comes from a connection, and its routes that
   check model access (the Action route /api/chat/actions/{id}, presets built on a model)
   ignore BYPASS_MODEL_ACCESS_CONTROL: without a row every non-admin gets "Model not found".
   The BFF's policy (config/policy.yaml) still decides what each role may use.
   A model that already has a row is left as it is (an admin may have restricted it), unless
   --force-public. Run it again after adding models to LiteLLM.
2. With --functions: installs or updates the gateway's functions from webui-integration/functions
   (the usage Action `gateway_usage`, switched on and global when first created; the ComfyUI Tool
   `comfyui_workflows`, readable by every user). Valves are kept; --bff-url sets their BFF_URL.

    .venv/bin/python scripts/openwebui_setup.py --url http://127.0.0.1:8080 --email admin@example.com
    OPENWEBUI_URL=... OPENWEBUI_ADMIN_TOKEN=... .venv/bin/python scripts/openwebui_setup.py --functions

Credentials: --token / OPENWEBUI_ADMIN_TOKEN (an admin's session token, e.g. from the browser's `token` cookie), or
--email / OPENWEBUI_ADMIN_EMAIL with the password from OPENWEBUI_ADMIN_PASSWORD (asked for on
a terminal when unset). Prints one line per model and function; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "webui-integration" / "functions"
PUBLIC_READ = {"principal_type": "user", "principal_id": "*", "permission": "read"}
CHAT_MODES = {"chat"}  # what Open-WebUI's chat calls (/v1/chat/completions); the BFF refuses other modes there


@dataclass(frozen=True)
class FunctionFile:
    id: str
    name: str
    file: str
    kind: str  # "function" (Admin Panel > Functions) or "tool" (Workspace > Tools)


FUNCTIONS = (
    FunctionFile("gateway_usage", "My gateway usage", "gateway_usage_action.py", "function"),
    FunctionFile("comfyui_workflows", "ComfyUI workflows", "comfyui_workflow_tool.py", "tool"),
)


class SetupError(Exception):
    pass


class OpenWebUI:
    def __init__(self, url: str, token: str, timeout: float = 60.0):
        self.client = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        try:
            answer = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SetupError(f"{method} {path}: Open-WebUI unreachable ({type(exc).__name__})") from None
        if answer.status_code >= 400 and answer.status_code not in allow:
            raise SetupError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()


def sign_in(url: str, email: str, password: str) -> str:
    try:
        answer = httpx.post(f"{url.rstrip('/')}/api/v1/auths/signin", json={"email": email, "password": password}, timeout=30)
    except httpx.HTTPError as exc:
        raise SetupError(f"Open-WebUI at {url} unreachable ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise SetupError(f"sign-in as {email} failed: HTTP {answer.status_code} {answer.text[:200]}")
    return str(answer.json()["token"])


def bff_models(webui: OpenWebUI, all_modes: bool) -> list[dict[str, Any]]:
    """The models Open-WebUI has from the BFF: its OpenAI connection's models, which carry the BFF's `mode`."""
    listed = webui.json("GET", "/api/models", params={"refresh": "true"})["data"]
    models = []
    for model in listed:
        upstream = model.get("openai") or {}
        mode = upstream.get("mode", model.get("mode"))
        if model.get("owned_by") != "openai" or model.get("preset") or model.get("arena") or mode is None:
            continue  # not a BFF model: a preset, an arena, another connection without modes
        if all_modes or mode in CHAT_MODES:
            models.append({"id": model["id"], "name": upstream.get("name") or model.get("name") or model["id"], "mode": mode})
    return models


def register_models(webui: OpenWebUI, *, all_modes: bool, force_public: bool, dry_run: bool) -> list[str]:
    models = bff_models(webui, all_modes)
    if not models:
        raise SetupError("Open-WebUI lists no model from the BFF: check its OpenAI connection (OPENAI_API_BASE_URL/KEY)")
    rows = {row["id"]: row for row in webui.json("GET", "/api/v1/models/all")}
    lines = []
    for model in models:
        row = rows.get(model["id"])
        grants = [grant for grant in (row or {}).get("access_grants") or []]
        public = any(
            (grant.get("principal_type"), grant.get("principal_id"), grant.get("permission")) == ("user", "*", "read")
            for grant in grants
        )
        if row is not None and public:
            lines.append(f"model {model['id']}: already readable by every user")
            continue
        if row is not None and not row.get("is_active", True):
            lines.append(f"model {model['id']}: left alone (an admin switched it off in Open-WebUI)")
            continue
        if row is not None and not force_public:
            lines.append(f"model {model['id']}: left alone (an admin set its access in Open-WebUI; --force-public to open it)")
            continue
        action = "registered with public read access" if row is None else "opened to every user (read)"
        if not dry_run:
            # Open-WebUI's own route for a base model's access: it creates the minimal row when missing.
            kept = [grant for grant in grants if grant.get("permission") == "write"] if row is not None else []
            webui.call(
                "POST",
                "/api/v1/models/model/access/update",
                json={"id": model["id"], "name": model["name"], "access_grants": [PUBLIC_READ, *kept]},
            )
        lines.append(f"model {model['id']}: {action}{' (dry run)' if dry_run else ''}")
    return lines


def install_functions(webui: OpenWebUI, *, bff_url: str | None, dry_run: bool) -> list[str]:
    lines = []
    for item in FUNCTIONS:
        content = (FUNCTIONS_DIR / item.file).read_text()
        base = "/api/v1/functions" if item.kind == "function" else "/api/v1/tools"
        current = webui.call("GET", f"{base}/id/{item.id}", allow=(401, 404))
        body: dict[str, Any] = {"id": item.id, "name": item.name, "content": content, "meta": {"description": item.name}}
        if current.status_code in (401, 404):  # Open-WebUI answers 401 "not found" for a missing function
            if item.kind == "tool":
                body["access_grants"] = [PUBLIC_READ]
            if not dry_run:
                webui.call("POST", f"{base}/create", json=body)
                if item.kind == "function":
                    created = webui.json("GET", f"{base}/id/{item.id}")
                    if not created.get("is_active"):
                        webui.call("POST", f"{base}/id/{item.id}/toggle")
                    if not created.get("is_global"):
                        webui.call("POST", f"{base}/id/{item.id}/toggle/global")
            what = "installed, on and global" if item.kind == "function" else "installed, readable by every user"
            lines.append(f"{item.kind} {item.id}: {what}{' (dry run)' if dry_run else ''}")
        else:
            stored = current.json()
            if stored.get("content") == content:
                state = ""
                if item.kind == "function":
                    state = f" ({'on' if stored.get('is_active') else 'off'}, {'global' if stored.get('is_global') else 'not global'})"
                lines.append(f"{item.kind} {item.id}: up to date{state}")
            else:
                if not dry_run:
                    body["meta"] = {**(stored.get("meta") or {}), "description": item.name}
                    webui.call("POST", f"{base}/id/{item.id}/update", json=body)
                lines.append(f"{item.kind} {item.id}: updated to this repository's version{' (dry run)' if dry_run else ''}")
        if bff_url:
            valves = webui.call("GET", f"{base}/id/{item.id}/valves", allow=(401, 404))  # not found yet in a dry run
            current_valves = (valves.json() if valves.status_code == 200 else None) or {}
            if current_valves.get("BFF_URL") != bff_url:
                if not dry_run:
                    webui.call("POST", f"{base}/id/{item.id}/valves/update", json={**current_valves, "BFF_URL": bff_url})
                lines.append(f"{item.kind} {item.id}: valve BFF_URL = {bff_url}{' (dry run)' if dry_run else ''}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("OPENWEBUI_URL", "http://127.0.0.1:8080"), help="Open-WebUI's URL (OPENWEBUI_URL)")
    parser.add_argument("--token", default=os.environ.get("OPENWEBUI_ADMIN_TOKEN"), help="an admin's token (OPENWEBUI_ADMIN_TOKEN)")
    parser.add_argument("--email", default=os.environ.get("OPENWEBUI_ADMIN_EMAIL"), help="sign in as this admin (OPENWEBUI_ADMIN_EMAIL)")
    parser.add_argument("--all-modes", action="store_true", help="register every BFF model, not only chat models")
    parser.add_argument("--force-public", action="store_true", help="also open models whose access an admin set")
    parser.add_argument("--functions", action="store_true", help="install or update the gateway's Action and Tool")
    parser.add_argument("--bff-url", help="with --functions: the functions' BFF_URL valve (outside compose)")
    parser.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    args = parser.parse_args(argv)
    try:
        token = args.token
        if not token:
            if not args.email:
                raise SetupError("give --token (OPENWEBUI_ADMIN_TOKEN) or --email (OPENWEBUI_ADMIN_EMAIL)")
            password = os.environ.get("OPENWEBUI_ADMIN_PASSWORD") or (getpass.getpass(f"password of {args.email}: ") if sys.stdin.isatty() else "")
            token = sign_in(args.url, args.email, password)
        webui = OpenWebUI(args.url, token)
        try:
            me = webui.call("GET", "/api/v1/auths/", allow=(401, 403))  # API keys may not read it: the admin routes decide then
            if me.status_code == 200 and me.json().get("role") != "admin":
                raise SetupError(f"{me.json().get('email')} is not an Open-WebUI admin (role {me.json().get('role')})")
            lines = register_models(webui, all_modes=args.all_modes, force_public=args.force_public, dry_run=args.dry_run)
            if args.functions:
                lines += install_functions(webui, bff_url=args.bff_url, dry_run=args.dry_run)
        finally:
            webui.close()
    except SetupError as exc:
        print(f"openwebui_setup: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
