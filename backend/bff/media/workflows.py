"""Image workflows: config/comfyui/workflows.yaml plus one API-format workflow JSON per workflow.

The mapping says which node id and input name receive each parameter. Everything is
validated at start-up; a request's options are resolved against the workflow's
defaults and limits, then written into a deep copy of the workflow.
"""

import copy
import json
import re
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

BackendName = Literal["comfyui", "mock"]
PARAMETERS = ("prompt", "negative_prompt", "seed", "steps", "width", "height", "batch_size", "checkpoint")
WORKFLOWS_FILE = "workflows.yaml"
WORKFLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$")
# Checkpoint names may sit in subfolders of ComfyUI's models dir; never absolute, never `..`.
_CHECKPOINT = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9 _.+()\-]*(/[A-Za-z0-9][A-Za-z0-9 _.+()\-]*)*$")
MAX_PROMPT_CHARS = 10_000
MIN_SIDE = 64
SIDE_STEP = 8  # latent images are 1/8 of the pixel size
MAX_SEED = 2**64 - 1  # ComfyUI's KSampler bound
RANDOM_SEED_BOUND = 2**50


class WorkflowConfigError(ValueError):
    pass


class ParameterError(ValueError):
    """A request parameter the workflow cannot take; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, dict) else value


def _decimal_text(value: object) -> object:
    return str(value) if isinstance(value, float) else value  # 0.004 stays exactly 0.004


def _checkpoint(value: str) -> str:
    if len(value) > 200 or not _CHECKPOINT.match(value):
        raise ValueError("a checkpoint file name, optionally in subfolders; no '..', no absolute path")
    return value


CheckpointName = Annotated[str, AfterValidator(_checkpoint)]


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(min_length=1, max_length=64)
    input: str = Field(min_length=1, max_length=128)


Targets = Annotated[list[Target], BeforeValidator(_one_or_many), Field(min_length=1)]


class ParameterMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Targets
    width: Targets
    height: Targets
    batch_size: Targets
    negative_prompt: Targets | None = None
    seed: Targets | None = None
    steps: Targets | None = None
    checkpoint: Targets | None = None

    def mapped(self) -> dict[str, list[Target]]:
        return {name: targets for name in PARAMETERS if (targets := getattr(self, name)) is not None}


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(ge=1, le=1000)
    max_width: int = Field(ge=MIN_SIDE, le=8192)
    max_height: int = Field(ge=MIN_SIDE, le=8192)
    max_batch: int = Field(ge=1, le=64)


class ImageOptions(BaseModel):
    """What a caller may choose; anything left out comes from the workflow."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    steps: int | None = Field(default=None, ge=1)
    width: int | None = Field(default=None, ge=MIN_SIDE)
    height: int | None = Field(default=None, ge=MIN_SIDE)
    batch_size: int | None = Field(default=None, ge=1)
    checkpoint: CheckpointName | None = None


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int | None = None
    checkpoint: CheckpointName | None = None


class ImageParams(BaseModel):
    """Every parameter of one job, resolved; None = the workflow does not map it."""

    prompt: str
    negative_prompt: str | None
    seed: int | None
    steps: int | None
    width: int
    height: int
    batch_size: int
    checkpoint: str | None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


class WorkflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(pattern=_FILE_NAME.pattern, description="API-format workflow JSON beside workflows.yaml")
    description: str = ""
    backend: BackendName
    cost_usd_per_image: Annotated[Decimal, BeforeValidator(_decimal_text), Field(ge=0)]
    parameters: ParameterMap
    defaults: Defaults = Field(default_factory=Defaults)
    limits: Limits


class WorkflowsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflows: dict[str, WorkflowConfig] = Field(min_length=1)

    @field_validator("workflows")
    @classmethod
    def _names(cls, workflows: dict[str, WorkflowConfig]) -> dict[str, WorkflowConfig]:
        bad = [name for name in workflows if not WORKFLOW_NAME.match(name)]
        if bad:
            raise ValueError(f"workflow names must match {WORKFLOW_NAME.pattern}: {bad}")
        return workflows


class GraphNode(BaseModel):
    model_config = ConfigDict(extra="allow")  # `_meta` and whatever newer ComfyUI versions add

    class_type: str = Field(min_length=1)
    inputs: dict[str, Any]


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


class Workflow:
    def __init__(self, name: str, config: WorkflowConfig, graph: dict[str, Any]):
        self.name = name
        self.config = config
        self.graph = graph
        self._check_mapping()
        try:
            self.resolve(ImageOptions(prompt="start-up check"))
        except ParameterError as exc:
            raise WorkflowConfigError(f"workflow '{name}', parameter '{exc.field}': {exc.message}") from None

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def _check_mapping(self) -> None:
        for parameter, targets in self.config.parameters.mapped().items():
            for target in targets:
                where = f"workflow '{self.name}', parameter '{parameter}', node '{target.node}'"
                node = self.graph.get(target.node)
                if node is None:
                    raise WorkflowConfigError(f"{where}: no such node in {self.config.file}")
                inputs = node["inputs"]
                if target.input not in inputs:
                    raise WorkflowConfigError(
                        f"{where} ({node['class_type']}): no input '{target.input}'; it has {sorted(inputs)}"
                    )
                if _is_link(inputs[target.input]):
                    raise WorkflowConfigError(
                        f"{where} ({node['class_type']}): input '{target.input}' is a link to another node, not a value"
                    )

    def _current(self, parameter: str) -> Any:
        targets = self.config.parameters.mapped().get(parameter)
        if not targets:
            return None
        return self.graph[targets[0].node]["inputs"][targets[0].input]

    def resolve(self, options: ImageOptions) -> ImageParams:
        """The job's parameters: the caller's, else the defaults, else the workflow file's values."""
        mapped = self.config.parameters.mapped()
        for name in PARAMETERS:
            if getattr(options, name) is not None and name not in mapped:
                raise ParameterError(name, f"workflow '{self.name}' does not take '{name}'")

        def pick(name: str) -> Any:
            for value in (getattr(options, name), getattr(self.config.defaults, name, None)):
                if value is not None:
                    return value
            return self._current(name)

        seed = options.seed if options.seed is not None else self.config.defaults.seed
        if seed is None and "seed" in mapped:
            seed = secrets.randbelow(RANDOM_SEED_BOUND)
        values = {name: pick(name) for name in ("negative_prompt", "steps", "width", "height", "batch_size", "checkpoint")}
        try:
            params = ImageParams(prompt=options.prompt, seed=seed, **values)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ParameterError(str(error["loc"][0]), f"the workflow's value is invalid: {error['msg']}") from None
        self._check_limits(params)
        return params

    def _check_limits(self, params: ImageParams) -> None:
        limits = self.limits
        if params.steps is not None and not 1 <= params.steps <= limits.max_steps:
            raise ParameterError("steps", f"must be between 1 and {limits.max_steps} for workflow '{self.name}'")
        for name, value, largest in (("width", params.width, limits.max_width), ("height", params.height, limits.max_height)):
            if not MIN_SIDE <= value <= largest or value % SIDE_STEP:
                raise ParameterError(
                    name, f"must be a multiple of {SIDE_STEP} between {MIN_SIDE} and {largest} for workflow '{self.name}'"
                )
        if not 1 <= params.batch_size <= limits.max_batch:
            raise ParameterError("batch_size", f"must be between 1 and {limits.max_batch} for workflow '{self.name}'")
        if params.checkpoint is not None and not _CHECKPOINT.match(params.checkpoint):
            raise ParameterError("checkpoint", "must be a checkpoint file name")

    def fill(self, params: ImageParams) -> dict[str, Any]:
        """A deep copy of the workflow with the parameters set; the loaded workflow never changes."""
        graph = copy.deepcopy(self.graph)
        for parameter, targets in self.config.parameters.mapped().items():
            value = getattr(params, parameter)
            if value is None:
                continue
            for target in targets:
                graph[target.node]["inputs"][target.input] = value
        return graph


class WorkflowCatalog:
    def __init__(self, workflows: dict[str, Workflow]):
        self.workflows = workflows
        self.default = next(iter(workflows))

    def get(self, name: str) -> Workflow | None:
        return self.workflows.get(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.workflows.values())


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors())


def _load_graph(directory: Path, name: str, config: WorkflowConfig) -> dict[str, Any]:
    path = directory / config.file
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkflowConfigError(f"workflow '{name}': cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise WorkflowConfigError(f"workflow '{name}': {path} is not an API-format workflow (node id -> node)")
    try:
        for node in raw.values():
            GraphNode.model_validate(node)
    except ValidationError as exc:
        raise WorkflowConfigError(
            f"workflow '{name}': {path} is not an API-format workflow (export it with 'Save (API Format)'): {_problems(exc)}"
        ) from None
    return raw


def load_workflows(directory: Path) -> WorkflowCatalog:
    path = directory / WORKFLOWS_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WorkflowConfigError(f"cannot read workflows file {path}: {exc}") from exc
    try:
        parsed = WorkflowsFile.model_validate(raw)
    except ValidationError as exc:
        raise WorkflowConfigError(f"invalid workflows file {path}: {_problems(exc)}") from None
    return WorkflowCatalog(
        {name: Workflow(name, config, _load_graph(directory, name, config)) for name, config in parsed.workflows.items()}
    )
