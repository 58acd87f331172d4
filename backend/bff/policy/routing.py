"""Task routing: which model alias (or image workflow) serves a task, from config/routing.yaml.

The generator mode picks one table at start-up; routes only ever ask `model_for(task)`.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

GeneratorMode = Literal["live", "mock"]
TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class TaskTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str = Field(min_length=1)
    tasks: dict[str, str] = Field(default_factory=dict)

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict[str, str]) -> dict[str, str]:
        bad = [name for name in tasks if not TASK_NAME.match(name)]
        if bad:
            raise ValueError(f"task names must match {TASK_NAME.pattern}: {bad}")
        return tasks

    def pick(self, task: str) -> str:
        return self.tasks.get(task, self.default)

    def with_overrides(self, environ: Mapping[str, str], prefix: str) -> "TaskTable":
        """PREFIX_<TASK> (dots and dashes as underscores) replaces single entries; PREFIX_DEFAULT the default."""
        tasks = dict(self.tasks)
        for task in tasks:
            override = environ.get(prefix + re.sub(r"[.\-]", "_", task).upper())
            if override:
                tasks[task] = override
        return TaskTable(default=environ.get(prefix + "DEFAULT") or self.default, tasks=tasks)


class ModeTables(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat: TaskTable
    images: TaskTable
    # Open-WebUI's task calls (title_generation, tags_generation, follow_up_generation, ...):
    # the model that serves them instead of the one Open-WebUI asked for; absent: as asked.
    openwebui_tasks: dict[str, str] = Field(default_factory=dict)

    @field_validator("openwebui_tasks")
    @classmethod
    def _openwebui_task_names(cls, tasks: dict[str, str]) -> dict[str, str]:
        bad = [name for name in tasks if not TASK_NAME.match(name)]
        if bad:
            raise ValueError(f"task names must match {TASK_NAME.pattern}: {bad}")
        return tasks


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modes: dict[GeneratorMode, ModeTables]


class TaskRouter:
    def __init__(self, mode: GeneratorMode, tables: ModeTables, environ: Mapping[str, str]):
        self.mode = mode
        self.chat = tables.chat.with_overrides(environ, "MODEL_")
        self.images = tables.images.with_overrides(environ, "IMAGE_WORKFLOW_")
        self.openwebui_tasks = tables.openwebui_tasks

    def model_for(self, task: str) -> str:
        return self.chat.pick(task)

    def workflow_for(self, task: str) -> str:
        return self.images.pick(task)

    def model_for_openwebui_task(self, task: str) -> str | None:
        return self.openwebui_tasks.get(task)


def load_router(path: Path, mode: GeneratorMode, environ: Mapping[str, str] | None = None) -> TaskRouter:
    try:
        config = RoutingConfig.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read routing file {path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ValueError(f"invalid routing file {path}: {problems}") from exc
    if mode not in config.modes:
        raise ValueError(f"routing file {path} has no table for GENERATOR_MODE={mode}")
    return TaskRouter(mode, config.modes[mode], os.environ if environ is None else environ)
