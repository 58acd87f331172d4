"""The policy file's schema, validated at start-up."""

from decimal import Decimal
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Permission(StrEnum):
    chat = "chat"  # chat, legacy completions, the Responses API
    embeddings = "embeddings"  # embeddings and rerank (RAG)
    audio = "audio"  # speech to text, text to speech
    moderations = "moderations"
    images = "images"
    usage_own = "usage.own"
    usage_all = "usage.all"
    monitoring = "monitoring"
    models_manage = "models.manage"


class ModelAccess(BaseModel):
    """A model group is allowed when its tier is listed or its name matches `include`,
    unless its name matches `exclude`. Aliases are judged by the group they point to."""

    model_config = ConfigDict(extra="forbid")

    tiers: list[str] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list, description="model group names or glob patterns")
    exclude: list[str] = Field(default_factory=list, description="model group names or glob patterns")

    def allows(self, group: str, tier: str | None) -> bool:
        if any(fnmatchcase(group, pattern) for pattern in self.exclude):
            return False
        return (tier is not None and tier in self.tiers) or any(fnmatchcase(group, p) for p in self.include)


class RolePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    permissions: list[Permission]
    models: ModelAccess


class Roles(BaseModel):
    """Only `user` is configurable: `admin` always has everything, `pending` nothing."""

    model_config = ConfigDict(extra="forbid")

    user: RolePolicy


class Budget(BaseModel):
    """USD limits; an absent limit means unlimited."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)

    def overridden_by(self, override: "Budget | None") -> "Budget":
        if override is None:
            return self
        return Budget(
            daily_usd=override.daily_usd if override.daily_usd is not None else self.daily_usd,
            monthly_usd=override.monthly_usd if override.monthly_usd is not None else self.monthly_usd,
        )


class RoleBudgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admin: Budget = Field(default_factory=Budget)
    user: Budget = Field(default_factory=Budget)


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: RoleBudgets = Field(default_factory=RoleBudgets)
    users: dict[str, Budget] = Field(default_factory=dict, description="per user id; set fields override the role's")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: list[str] = Field(min_length=1, description="known model tiers, cheapest first")
    roles: Roles
    budgets: Budgets = Field(default_factory=Budgets)

    @model_validator(mode="after")
    def _tiers_known(self) -> "Policy":
        unknown = set(self.roles.user.models.tiers) - set(self.tiers)
        if unknown:
            raise ValueError(f"roles.user.models.tiers names unknown tiers {sorted(unknown)}; known: {self.tiers}")
        return self


class PolicyError(ValueError):
    pass


def load_policy(path: Path) -> Policy:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"invalid policy file {path}: {problems}") from exc
