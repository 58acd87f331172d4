"""GET /api/usage/provider-budgets: LiteLLM's provider budgets as LiteLLM keeps them (admins).

The budgets are LiteLLM's own (config/litellm.yaml, router_settings.provider_budget_config):
LiteLLM counts every answer's cost per provider and routes around a provider whose spend has
reached its limit (to the group's fallbacks). The gateway only reads LiteLLM's `/provider/budgets`
and reports it in its own shape; it neither counts nor enforces anything here.

LiteLLM 1.106 without Redis reports `budget_reset_at` as now plus the key's expiry *timestamp*
(its in-memory cache's `async_get_ttl` returns the absolute expiry, which
`spend_management_endpoints.provider_budgets` adds to now as if it were seconds left): a date
decades ahead. Such a value is read back as the expiry it encodes; with Redis LiteLLM reports
the real reset, which passes through unchanged.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bff.errors import ApiError, unavailable
from bff.pipeline.admission import Operation
from bff.pipeline.call import Call
from bff.policy.budgets import plain_decimal
from bff.policy.model import Permission
from bff.services import ServicesDep
from bff.upstream.litellm import UpstreamError

router = APIRouter(prefix="/api/usage", tags=["usage"])

PROVIDER_BUDGETS = Operation(None, Permission.usage_all)  # reading state: no span, no charge
ProviderBudgetsCall = Annotated[Call, Depends(PROVIDER_BUDGETS)]
LITELLM_PATH = "/provider/budgets"
TIMEOUT_SECONDS = 10.0


# --- LiteLLM's answer (proxy/_types.py ProviderBudgetResponse), validated -------------------


class _LiteLLMProviderBudget(BaseModel):
    model_config = ConfigDict(extra="ignore")

    budget_limit: Decimal | None
    time_period: str | None
    spend: Decimal | None = None
    budget_reset_at: datetime | None = None

    @field_validator("budget_limit", "spend", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        """LiteLLM's floats as their shortest text (2.5e-05 -> 0.000025), never binary noise."""
        return str(value) if isinstance(value, float) else value


class _LiteLLMProviderBudgets(BaseModel):
    model_config = ConfigDict(extra="ignore")

    providers: dict[str, _LiteLLMProviderBudget]


# --- the gateway's answer ------------------------------------------------------------------


class ProviderBudget(BaseModel):
    provider: str = Field(description="the provider as LiteLLM names it (the `openai` of `openai/gpt-4o`)")
    period: str | None = Field(description="LiteLLM's window, e.g. '1d' (24 h from the window's start, not a calendar day)")
    limit_usd: str | None = Field(description="decimal string; null: LiteLLM has no limit for it")
    spent_usd: str = Field(description="decimal string: LiteLLM's count in the current window")
    remaining_usd: str | None = Field(description="decimal string; negative when the last answer overshot")
    exceeded: bool = Field(description="spend has reached the limit: LiteLLM routes around this provider (to fallbacks)")
    resets_at: datetime | None = Field(description="when LiteLLM's window ends and the spend starts again at 0")


class ProviderBudgetsResponse(BaseModel):
    providers: list[ProviderBudget]


def _reset_time(reported: datetime | None, now: datetime) -> datetime | None:
    """LiteLLM's reset, or (in-memory LiteLLM, see the module docstring) the expiry it encodes."""
    if reported is None:
        return None
    reported = reported if reported.tzinfo else reported.replace(tzinfo=UTC)
    ahead = (reported - now).total_seconds()
    if ahead > now.timestamp() / 2:  # decades ahead: now + an epoch timestamp, not now + seconds left
        return datetime.fromtimestamp(ahead, UTC).replace(microsecond=0)
    return reported


def _budget(provider: str, state: _LiteLLMProviderBudget, now: datetime) -> ProviderBudget:
    spent = state.spend or Decimal(0)
    limit = state.budget_limit
    return ProviderBudget(
        provider=provider,
        period=state.time_period,
        limit_usd=plain_decimal(limit) if limit is not None else None,
        spent_usd=plain_decimal(spent),
        remaining_usd=plain_decimal(limit - spent) if limit is not None else None,
        exceeded=limit is not None and spent >= limit,  # LiteLLM's own test (budget_limiter.py)
        resets_at=_reset_time(state.budget_reset_at, now),
    )


@router.get(
    "/provider-budgets",
    response_model=ProviderBudgetsResponse,
    summary="LiteLLM's provider budgets: limit, spend and reset per provider (admins)",
)
async def provider_budgets(services: ServicesDep, _: ProviderBudgetsCall) -> ProviderBudgetsResponse:
    try:
        answer = await services.litellm.get(LITELLM_PATH, TIMEOUT_SECONDS)
    except UpstreamError:
        raise unavailable("LiteLLM did not answer; provider budgets are unknown", "provider_budgets_unavailable") from None
    now = datetime.now(UTC)
    if answer.status_code != 200:  # e.g. no router_settings.provider_budget_config in LiteLLM's config
        raise ApiError(502, "LiteLLM reported no provider budgets", "upstream_error", "provider_budgets_unavailable")
    try:
        state = _LiteLLMProviderBudgets.model_validate(answer.json())
    except (ValueError, ValidationError):
        raise ApiError(502, "LiteLLM's provider budgets were not understood", "upstream_error", "provider_budgets_invalid") from None
    return ProviderBudgetsResponse(
        providers=[_budget(name, budget, now) for name, budget in sorted(state.providers.items())]
    )

