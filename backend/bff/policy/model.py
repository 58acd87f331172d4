"""The policy file's schema, validated at start-up."""

from decimal import Decimal
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


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


class WhenExceeded(StrEnum):
    refuse = "refuse"  # 429 budget_exceeded
    downgrade = "downgrade"  # chat is served by `downgrade_to` until the hard ceiling


class _Overridable(BaseModel):
    def overridden_by(self, override: Self | None) -> Self:
        """The fields the override sets replace these (a `users:` entry over the role's)."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class Budget(_Overridable):
    """USD limits; an absent limit means unlimited.

    Past `daily_usd`/`monthly_usd`, `when_exceeded` decides: refuse, or serve chat with the
    cheaper `downgrade_to` until `hard_daily_usd`/`hard_monthly_usd` (absent: no ceiling).
    """

    model_config = ConfigDict(extra="forbid")

    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)
    when_exceeded: WhenExceeded | None = None  # None: as the role's (refuse when nothing says otherwise)
    downgrade_to: str | None = Field(default=None, description="a model group or alias the caller may use and that costs less")
    hard_daily_usd: Decimal | None = Field(default=None, ge=0)
    hard_monthly_usd: Decimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _downgrade_complete(self) -> "Budget":
        if self.when_exceeded is WhenExceeded.downgrade and not self.downgrade_to:
            raise ValueError("when_exceeded: downgrade needs downgrade_to (the cheaper model to serve)")
        for soft, hard, name in ((self.daily_usd, self.hard_daily_usd, "daily"), (self.monthly_usd, self.hard_monthly_usd, "monthly")):
            if soft is not None and hard is not None and hard < soft:
                raise ValueError(f"hard_{name}_usd must not be below {name}_usd")
        return self



class RoleBudgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admin: Budget = Field(default_factory=Budget)
    user: Budget = Field(default_factory=Budget)


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Fractions of a period's limit; each sends one alert per user and period (BUDGET_ALERT_WEBHOOK_URL)
    # and marks the user's answers with x-budget-warning once passed.
    alerts: list[float] = Field(default_factory=list, description="soft thresholds, e.g. [0.8, 0.95]")
    roles: RoleBudgets = Field(default_factory=RoleBudgets)
    users: dict[str, Budget] = Field(default_factory=dict, description="per user id; set fields override the role's")

    @field_validator("alerts")
    @classmethod
    def _fractions(cls, alerts: list[float]) -> list[float]:
        if any(not 0 < value < 1 for value in alerts) or len(set(alerts)) != len(alerts):
            raise ValueError("alert thresholds are distinct fractions between 0 and 1 (exclusive), e.g. [0.8, 0.95]")
        return sorted(alerts)


class Limits(_Overridable):
    """Per-user rate limits; an absent limit means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1, description="prompt estimate up front, settled from usage")
    concurrent_requests: int | None = Field(default=None, ge=1, description="requests and streams in flight at once")



class RoleLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admin: Limits = Field(default_factory=Limits)
    user: Limits = Field(default_factory=Limits)


class LimitsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: RoleLimits = Field(default_factory=RoleLimits)
    users: dict[str, Limits] = Field(default_factory=dict, description="per user id; set fields override")


class GroupPolicy(BaseModel):
    """What membership of one Open-WebUI group adds to a user's role (see policy/effective.py)."""

    model_config = ConfigDict(extra="forbid")

    permissions: list[Permission] = Field(default_factory=list)
    models: ModelAccess = Field(default_factory=ModelAccess)
    budget: Budget | None = None
    limits: Limits | None = None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: list[str] = Field(min_length=1, description="known model tiers, cheapest first")
    roles: Roles
    groups: dict[str, GroupPolicy] = Field(default_factory=dict, description="Open-WebUI group name -> what it adds")
    budgets: Budgets = Field(default_factory=Budgets)
    limits: LimitsSection = Field(default_factory=LimitsSection)

    @model_validator(mode="after")
    def _tiers_known(self) -> "Policy":
        sources = {"roles.user": self.roles.user.models, **{f"groups.{name}": group.models for name, group in self.groups.items()}}
        for where, access in sources.items():
            unknown = set(access.tiers) - set(self.tiers)
            if unknown:
                raise ValueError(f"{where}.models.tiers names unknown tiers {sorted(unknown)}; known: {self.tiers}")
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
