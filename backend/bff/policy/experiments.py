"""A/B experiments (config/experiments.yaml): while one is active, requests for its target are
served by the caller's variant.

A target is a model name as callers send it (an alias such as `smart`), a task (of
/api/llm/generate, or an Open-WebUI task call), or an `X-LLM-Context` value. Assignment is
sticky: a stable hash of (experiment, user id) picks a variant by weight, the same on every
replica and every day. A variant the caller may not use gives way to the control (the first
variant). The span records `gateway.experiment` and `gateway.variant`; the answer says which
variant served (x-gateway-experiment, x-gateway-variant).
"""

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from bff.identity.principal import AuthMethod, Principal, Role
from bff.policy.access import AccessPolicy
from bff.policy.models import may_use
from bff.policy.routing import TASK_NAME
from bff.upstream.catalog import CHAT_MODES, Catalog

EXPERIMENT_HEADER = "x-gateway-experiment"
VARIANT_HEADER = "x-gateway-variant"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Target(BaseModel):
    """Exactly one of them."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=256, description="as callers name it, e.g. smart")
    task: str | None = Field(default=None, pattern=TASK_NAME.pattern)
    context: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:\-]{1,64}$")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Target":
        if sum(value is not None for value in (self.model, self.task, self.context)) != 1:
            raise ValueError("a target names exactly one of model, task or context")
        return self

    def matches(self, model: str, task: str | None, context: str | None) -> bool:
        if self.model is not None:
            return self.model == model
        if self.task is not None:
            return self.task == task
        return self.context == context


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    model: str = Field(min_length=1, max_length=256)
    weight: int = Field(ge=1, le=10_000)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    description: str | None = Field(default=None, max_length=500)
    target: Target
    variants: list[Variant] = Field(min_length=2, max_length=20, description="the first is the control")
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        if self.end <= self.start:
            raise ValueError(f"experiment '{self.name}': end must be after start")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment '{self.name}': variant names must be distinct")
        return self

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def variant_for(self, user_id: str) -> Variant:
        """Sticky: the same user always lands in the same variant (weights as shares)."""
        digest = hashlib.sha256(f"{self.name}\x00{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % sum(variant.weight for variant in self.variants)
        for variant in self.variants:
            if point < variant.weight:
                return variant
            point -= variant.weight
        raise AssertionError("unreachable: the point lies below the total weight")


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiments: list[Experiment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> "ExperimentsFile":
        names = [experiment.name for experiment in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError("experiment names must be distinct")
        return self


class ExperimentsError(ValueError):
    pass


class Assignment(BaseModel):
    experiment: str
    variant: str
    model: str
    fell_back_to_control: bool = False


class Experiments:
    def __init__(self, experiments: list[Experiment]):
        self.all = experiments
        self._by_name = {experiment.name: experiment for experiment in experiments}

    def get(self, name: str) -> Experiment | None:
        return self._by_name.get(name)

    def find(self, model: str, task: str | None, context: str | None, now: datetime | None = None) -> Experiment | None:
        """The first active experiment (file order) whose target this request is."""
        now = now or datetime.now(UTC)
        return next((e for e in self.all if e.active(now) and e.target.matches(model, task, context)), None)


def load_experiments(path: Path) -> Experiments:
    """An absent file means no experiments; a bad one stops the BFF with the field named."""
    if not path.exists():
        return Experiments([])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Experiments(ExperimentsFile.model_validate(raw).experiments)
    except (OSError, yaml.YAMLError) as exc:
        raise ExperimentsError(f"cannot read experiments file {path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors())
        raise ExperimentsError(f"invalid experiments file {path}: {problems}") from exc


def problems(experiments: Experiments, catalog: Catalog, access: AccessPolicy) -> list[str]:
    """What is wrong with the experiments against LiteLLM's catalog and the policy (start-up)."""
    found: list[str] = []
    user = Principal(user_id="experiments-check", role=Role.user, auth=AuthMethod.session_token)
    for experiment in experiments.all:
        where = f"experiment '{experiment.name}'"
        target = catalog.get(experiment.target.model) if experiment.target.model else None
        if experiment.target.model is not None and target is None:
            found.append(f"{where}: target model '{experiment.target.model}' is not a LiteLLM model")
        for variant in experiment.variants:
            entry = catalog.get(variant.model)
            if entry is None:
                found.append(f"{where}: variant '{variant.name}' names '{variant.model}', not a LiteLLM model")
            elif entry.mode not in CHAT_MODES:
                found.append(f"{where}: variant '{variant.name}' names a {entry.mode} model; experiments serve chat")
        control = catalog.get(experiment.control.model)
        if target is not None and control is not None and may_use(access, catalog, user, target) and not may_use(
            access, catalog, user, control
        ):
            found.append(f"{where}: users may use '{target.name}' but not the control '{control.name}'")
    return found
