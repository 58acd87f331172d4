"""The usage Action clicked by a normal user, through Open-WebUI 0.12.4's own Action route.

POST /api/chat/actions/{id} checks the model's access in Open-WebUI's database and ignores
BYPASS_MODEL_ACCESS_CONTROL: a model that only comes from the BFF connection has no row there,
so every non-admin gets "Model not found". scripts/openwebui_setup.py registers the BFF's chat
models (public read) and installs the functions through Open-WebUI's admin API, idempotently.
"""

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from conftest import ROOT
from openwebui.api import Account
from openwebui.conftest import Stack
from openwebui.test_openwebui_e2e import ADMIN_ONLY_MODEL, USER_MODEL, usage

SETUP = ROOT / "scripts" / "openwebui_setup.py"
FUNCTIONS = ROOT / "webui-integration" / "functions"
ACTION_ID = "gateway_usage"


def run_setup(stack: Stack, admin: Account, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(SETUP), "--url", stack.openwebui.url, *args],
        env={"OPENWEBUI_ADMIN_TOKEN": admin.token, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def click(stack: Stack, account: Account, chat_id: str, message: dict[str, Any]) -> Any:
    """What the browser posts when the button under an assistant message is clicked."""
    body = {
        "model": USER_MODEL,
        "chat_id": chat_id,
        "id": message["id"],
        "session_id": f"socket-{uuid.uuid4().hex[:8]}",
        "messages": [{"id": "u-1", "role": "user", "content": "Say hello"}, message],
        "model_item": {"id": USER_MODEL},
    }
    return stack.openwebui.action(account, ACTION_ID, body)


def test_the_usage_action_works_for_a_normal_user_once_the_setup_script_ran(stack: Stack, admin: Account, user: Account) -> None:
    # As README section 4 installs it by hand: the Action, switched on and global.
    content = (FUNCTIONS / "gateway_usage_action.py").read_text()
    form = {"id": ACTION_ID, "name": "My gateway usage", "content": content, "meta": {"description": "My gateway usage"}}
    assert stack.openwebui.call(admin, "POST", "/api/v1/functions/create", json=form).status_code == 200
    for toggle in ("toggle", "toggle/global"):
        assert stack.openwebui.call(admin, "POST", f"/api/v1/functions/id/{ACTION_ID}/{toggle}").status_code == 200

    assert stack.openwebui.chat(user, USER_MODEL).status_code == 200  # usage to show
    message = {"id": "a-1", "role": "assistant", "content": "Hi there.", "parentId": "u-1"}
    chat_id = stack.openwebui.new_chat(
        user,
        {
            "title": "Usage",
            "models": [USER_MODEL],
            "history": {"currentId": "a-1", "messages": {"u-1": {"id": "u-1", "role": "user", "content": "Say hello", "childrenIds": ["a-1"]}, "a-1": message}},
        },
    )

    # Before: Open-WebUI has no row for the BFF's model, so its Action route refuses every non-admin.
    refused = click(stack, user, chat_id, message)
    assert (refused.status_code, refused.json()["detail"]) == (400, "Model not found"), refused.text

    # The setup script: the BFF's chat models get a row with public read; the function and the
    # tool are installed or brought up to date; the functions' BFF_URL valve points at this BFF.
    lines = run_setup(stack, admin, "--functions", "--bff-url", stack.bff.url)
    assert f"model {USER_MODEL}: registered with public read access" in lines
    assert f"model {ADMIN_ONLY_MODEL}: registered with public read access" in lines  # the BFF's policy still refuses it
    assert not any(line.startswith("model fake-embed:") for line in lines)  # chat models only: Open-WebUI never chats with others
    assert f"function {ACTION_ID}: up to date (on, global)" in lines
    assert "tool comfyui_workflows: installed, readable by every user" in lines

    clicked = click(stack, user, chat_id, message)
    assert clicked.status_code == 200, clicked.text
    ((updated,),) = [clicked.json()["messages"]]
    assert updated["id"] == "a-1" and updated["content"].startswith("Hi there.\n\n**Your LLM gateway usage** (UTC)")
    text = updated["content"]
    assert "- daily: " in text and " of $5.00 (spent " in text and "- monthly: " in text and " of $50.00 (spent " in text
    # The numbers are the user's own (usage.own), as the usage API tells that user.
    today = usage(stack, admin, "/api/usage/summary", user=user.id, **{"from": _midnight()})["totals"]
    assert _requests_in(text, "today") == today["requests"] >= 1
    with stack.bff.client(user.token) as client:
        budget = client.get("/api/usage/budget").json()
    daily = next(period for period in budget["periods"] if period["period"] == "daily")
    assert Decimal(daily["spent_usd"]) > 0

    # Running it again changes nothing.
    rows_before = _model_rows(stack, admin)
    again = run_setup(stack, admin, "--functions", "--bff-url", stack.bff.url)
    assert f"model {USER_MODEL}: already readable by every user" in again
    assert f"function {ACTION_ID}: up to date (on, global)" in again and "tool comfyui_workflows: up to date" in again
    assert not any("valve" in line or "registered" in line or "installed" in line for line in again), again
    assert _model_rows(stack, admin) == rows_before

    # A model an admin restricted in Open-WebUI is left alone.
    grants = [{"principal_type": "user", "principal_id": admin.id, "permission": "read"}]
    restricted = stack.openwebui.call(
        admin, "POST", "/api/v1/models/model/access/update", json={"id": ADMIN_ONLY_MODEL, "name": ADMIN_ONLY_MODEL, "access_grants": grants}
    )
    assert restricted.status_code == 200, restricted.text
    kept = run_setup(stack, admin)
    assert any(line.startswith(f"model {ADMIN_ONLY_MODEL}: left alone") for line in kept), kept
    assert _model_rows(stack, admin)[ADMIN_ONLY_MODEL] == [("user", admin.id, "read")]


def _midnight() -> str:
    return datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC).isoformat()


def _requests_in(markdown: str, label: str) -> int:
    """The requests column of the `| today | cost | tokens | requests |` row."""
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return int(row.strip("|").split("|")[-1].strip().replace(",", ""))


def _model_rows(stack: Stack, admin: Account) -> dict[str, list[tuple[str, str, str]]]:
    rows = stack.openwebui.call(admin, "GET", "/api/v1/models/all").json()
    return {
        row["id"]: sorted((g["principal_type"], g["principal_id"], g["permission"]) for g in row.get("access_grants") or [])
        for row in rows
    }


def test_the_setup_script_refuses_a_non_admin(stack: Stack, user: Account) -> None:
    done = subprocess.run(
        [sys.executable, str(SETUP), "--url", stack.openwebui.url, "--dry-run"],
        env={"OPENWEBUI_ADMIN_TOKEN": user.token, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1 and "is not an Open-WebUI admin (role user)" in done.stderr, done.stderr
