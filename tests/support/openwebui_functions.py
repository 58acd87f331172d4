"""Loads and calls Open-WebUI function files the way Open-WebUI 0.12.4 does, without Open-WebUI.

Each helper mirrors one piece of open_webui (named in its docstring): a function file is
exec'd into a fresh module, the class it defines decides its kind, valves are a pydantic
model set on the instance, a Tool's public methods become tool specs (reserved `__x__`
arguments dropped), and a call passes only the reserved arguments the method declares.
"""

import inspect
import re
import sys
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import Field, create_model


def extract_frontmatter(content: str) -> dict[str, str]:
    """open_webui.utils.plugin.extract_frontmatter: `key: value` lines of a leading triple-quoted block."""
    lines = content.splitlines()
    if not lines or lines[0].strip() != '"""':
        return {}
    pattern = re.compile(r"^\s*([a-z_]+):\s*(.*)\s*$", re.IGNORECASE)
    frontmatter: dict[str, str] = {}
    for line in lines[1:]:
        if '"""' in line:
            break
        match = pattern.match(line)
        if match:
            frontmatter[match.group(1).strip()] = match.group(2).strip()
    return frontmatter


def replace_imports(content: str) -> str:
    """open_webui.utils.plugin.replace_imports: plain text replacement, comments and strings included."""
    for old, new in (("from utils", "from open_webui.utils"), ("from apps", "from open_webui.apps"),
                     ("from main", "from open_webui.main"), ("from config", "from open_webui.config")):
        content = content.replace(old, new)
    return content


def load(path: Path) -> tuple[Any, str, dict[str, str]]:
    """open_webui.utils.plugin.load_tool_module_by_id / load_function_module_by_id: (instance, kind, frontmatter)."""
    content = replace_imports(path.read_text())
    module = types.ModuleType(f"function_{path.stem}_{uuid.uuid4().hex}")
    module.__dict__["__file__"] = str(path)
    sys.modules[module.__name__] = module  # only while exec'ing, as Open-WebUI does
    try:
        exec(compile(content, str(path), "exec"), module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    for kind, class_name in (("tool", "Tools"), ("pipe", "Pipe"), ("filter", "Filter"), ("action", "Action")):
        if hasattr(module, class_name):
            return getattr(module, class_name)(), kind, extract_frontmatter(content)
    raise ValueError(f"{path.name} defines no Tools, Pipe, Filter or Action class")


def set_valves(instance: Any, values: dict[str, Any]) -> None:
    """What Open-WebUI does before each call: `module.valves = module.Valves(**stored_valves)`."""
    instance.valves = instance.Valves(**values)


def tool_specs(tool: Any) -> list[dict[str, Any]]:
    """open_webui.utils.tools.get_tool_specs + get_tools: one spec per public method, `__x__` arguments removed."""
    specs = []
    for name in dir(tool):
        method = getattr(tool, name)
        if name.startswith("_") or not callable(method) or inspect.isclass(method):
            continue
        hints = get_type_hints(method)
        docstring = method.__doc__ or ""
        params = {name: text for name, text in re.findall(r":param (\w+):\s*(.*)", docstring) if not name.startswith("__")}
        fields: dict[str, Any] = {}
        for arg, parameter in inspect.signature(method).parameters.items():
            default = parameter.default if parameter.default is not parameter.empty else ...
            # As in convert_function_to_pydantic_model: a Field only for documented arguments.
            fields[arg] = (hints.get(arg, Any), Field(default, description=params[arg]) if arg in params else default)
        schema = create_model(name, **fields).model_json_schema()
        properties = {key: value for key, value in schema.get("properties", {}).items() if not key.startswith("__")}
        description = re.split(":(param|return)", docstring, maxsplit=1)[0].strip()
        specs.append({"name": name, "description": description, "parameters": {**schema, "properties": properties}})
    return specs


def _reserved(method: Callable[..., Any], extra: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(method).parameters
    return {key: value for key, value in extra.items() if key in parameters}


async def call_tool(tool: Any, name: str, arguments: dict[str, Any], extra: dict[str, Any]) -> Any:
    """open_webui.utils.tools.get_async_tool_function_and_apply_extra_params: the model's arguments + declared extras."""
    method = getattr(tool, name)
    return await method(**arguments, **_reserved(method, extra))


async def call_action(action: Any, body: dict[str, Any], extra: dict[str, Any]) -> Any:
    """open_webui.utils.actions.chat_action: `body` plus the declared extras."""
    return await action.action(body=body, **_reserved(action.action, extra))


def openwebui_user(user_id: str, role: str = "user", name: str | None = None) -> dict[str, Any]:
    """`__user__` as Open-WebUI passes it: UserModel.model_dump() of the calling user."""
    now = int(time.time())
    return {
        "id": user_id,
        "email": f"{user_id}@example.test",
        "username": None,
        "role": role,
        "name": name or user_id,
        "profile_image_url": f"/api/v1/users/{user_id}/profile/image",
        "profile_banner_image_url": None,
        "bio": None,
        "gender": None,
        "date_of_birth": None,
        "timezone": None,
        "presence_state": None,
        "status_emoji": None,
        "status_message": None,
        "status_expires_at": None,
        "info": None,
        "settings": None,
        "oauth": None,
        "scim": None,
        "last_active_at": now,
        "updated_at": now,
        "created_at": now,
    }


class EventLog:
    """A collecting `__event_emitter__`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event["data"] for event in self.events if event["type"] == kind]

    def statuses(self) -> list[str]:
        return [data["description"] for data in self.of("status")]

    def text(self) -> str:
        return repr(self.events)
