"""Runs inside .venv-openwebui: loads the function files with Open-WebUI 0.12.4's own code and calls them.

    python openwebui_real_loader.py <functions dir> <bff url> <service key> <jwt secret> <user id>

Uses open_webui.utils.plugin (frontmatter, exec, class detection), open_webui.utils.tools
(tool specs; binding of the reserved arguments and argument coercion) and a real
UserModel dump as `__user__`, then prints what happened as one JSON object on stdout.
Needs an Open-WebUI environment (DATA_DIR, FROM_INIT_PY, offline settings): see the test.
"""

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from open_webui.models.users import UserModel
from open_webui.utils.plugin import (
    load_function_module_by_id,
    load_tool_module_by_id,
    replace_imports,
)
from open_webui.utils.tools import (
    get_async_tool_function_and_apply_extra_params,
    get_tool_specs,
)


async def main(functions: Path, bff_url: str, key: str, secret: str, user_id: str) -> dict[str, Any]:
    now = int(time.time())
    user = UserModel(id=user_id, email="real@example.test", name="Real Loader", role="user",
                     last_active_at=now, updated_at=now, created_at=now).model_dump()
    valves = {"BFF_URL": bff_url, "BFF_SERVICE_KEY": key, "FORWARD_USER_INFO_HEADER_JWT_SECRET": secret}

    tool_source = replace_imports((functions / "comfyui_workflow_tool.py").read_text())
    tool, tool_manifest, _ = await load_tool_module_by_id("comfyui_workflows", content=tool_source)
    tool.valves = tool.Valves(**valves, WORKFLOWS="mock-image", PROGRESS_INTERVAL_SECONDS=0)
    tool_events: list[dict[str, Any]] = []

    async def collect_tool(event: dict[str, Any]) -> None:
        tool_events.append(event)

    extra = {"__user__": user, "__event_emitter__": collect_tool, "__metadata__": {}, "__request__": None,
             "__chat_id__": None, "__message_id__": None, "__id__": "comfyui_workflows", "__model__": {}}
    bound = await get_async_tool_function_and_apply_extra_params(tool.run_image_workflow, extra)
    # The model sends JSON: numbers may arrive as strings, which Open-WebUI coerces.
    tool_result = await bound(prompt="a lighthouse", width="96", height=64)

    action_source = replace_imports((functions / "gateway_usage_action.py").read_text())
    action, kind, action_manifest, _ = await load_function_module_by_id("gateway_usage", content=action_source)
    action.valves = action.Valves(**valves)
    action_events: list[dict[str, Any]] = []

    async def collect_action(event: dict[str, Any]) -> None:
        action_events.append(event)

    messages = [{"id": "m0", "role": "user", "content": "Hi"}, {"id": "m1", "role": "assistant", "content": "Hi there."}]
    action_result = await action.action(body={"model": "m", "messages": messages, "chat_id": "c", "id": "m1"},
                                        __user__=user, __event_emitter__=collect_action)
    return {
        "tool_manifest": tool_manifest,
        "tool_specs": get_tool_specs(tool),
        "tool_result": tool_result,
        "tool_events": tool_events,
        "action_kind": kind,
        "action_manifest": action_manifest,
        "action_events": action_events,
        "action_result": action_result,
    }


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1]), *sys.argv[2:6]))
    print("RESULT " + json.dumps(result))
