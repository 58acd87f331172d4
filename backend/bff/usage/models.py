"""Typed requests and answers of the usage API."""

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class Bucket(StrEnum):
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"


class Dimension(StrEnum):
    model = "model"
    user = "user"
    provider = "provider"
    role = "role"
    context = "context"
    operation = "operation"
    status = "status"
    session = "session"
    outcome = "outcome"
    task = "task"  # /api/llm/generate's task or Open-WebUI's task call; '' for plain chat


class Percentiles(BaseModel):
    """quantilesBFloat16 in ClickHouse: within about 1 % of the exact value, and the same from any mix of rollups."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class UsageTotals(BaseModel):
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = Field(0.0, description="exact decimal sum in ClickHouse, sent as a JSON number")
    fallbacks: int = 0
    latency_ms: Percentiles = Field(default_factory=Percentiles)
    ttft_ms: Percentiles = Field(
        default_factory=Percentiles, description="time to first token of streamed requests"
    )


class Range(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime

    model_config = {"populate_by_name": True}


class AppliedFilters(BaseModel):
    model: str | None = None
    user: str | None = None
    provider: str | None = None
    context: str | None = None
    operation: str | None = None
    status: str | None = None


Source = Literal["rollup", "requests", "rollup+requests"]


class SummaryResponse(BaseModel):
    range: Range
    filters: AppliedFilters
    source: Source = Field(
        description="where the answer came from: the daily rollups (whole UTC days), the typed request table, or both merged"
    )
    totals: UsageTotals


class TimeseriesPoint(UsageTotals):
    t: datetime


class TimeseriesResponse(BaseModel):
    range: Range
    filters: AppliedFilters
    source: Source
    bucket: Bucket
    points: list[TimeseriesPoint]


class BreakdownRow(UsageTotals):
    key: str
    name: str | None = Field(None, description="by=user: the user's name as last seen (otel.gateway_users)")
    email: str | None = Field(None, description="by=user: the user's email as last seen")


class BreakdownResponse(BaseModel):
    range: Range
    filters: AppliedFilters
    source: Source
    by: Dimension
    rows: list[BreakdownRow]


class SessionRequest(BaseModel):
    timestamp: datetime
    request_id: str
    model: str
    status: int
    stream: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None


class SessionResponse(BaseModel):
    session_id: str
    totals: UsageTotals
    requests: list[SessionRequest]


class RequestDetail(SessionRequest):
    """One gateway request as stored in the typed table."""

    trace_id: str
    user_id: str
    role: str
    requested_model: str
    provider: str
    deployment_id: str
    operation: str
    route: str
    session_id: str
    context: str
    total_tokens: int
    retries: int
    fallbacks: int
    error_type: str
    outcome: str = Field(description="completed, refused, upstream_failed or client_disconnected")
    cost_estimated: bool = Field(description="true: a stream cut before LiteLLM's usage, charged an estimate")
    user_name: str | None = Field(None, description="the user's name as last seen (otel.gateway_users)")
    user_email: str | None = Field(None, description="the user's email as last seen")


class TraceSpan(BaseModel):
    """A span of the request's trace from any service (Kong, the BFF, LiteLLM); no attributes."""

    timestamp: datetime
    service_name: str
    span_name: str
    span_kind: str
    span_id: str
    parent_span_id: str
    duration_ms: float
    status_code: str


class RequestTrace(BaseModel):
    request_id: str
    trace_id: str
    request: RequestDetail
    spans: list[TraceSpan]


class BudgetPeriod(BaseModel):
    period: Literal["daily", "monthly"]
    limit_usd: str = Field(description="decimal string")
    spent_usd: str = Field(description="decimal string")
    remaining_usd: str = Field(description="decimal string; negative when the last request overshot")
    resets_at: datetime


class BudgetResponse(BaseModel):
    user_id: str
    role: str
    limited: bool = Field(description="false: no limit applies to this user")
    periods: list[BudgetPeriod]


class BudgetAlert(BaseModel):
    """One recorded budget alert (policy/budget_alerts.py): a user's spend passed a threshold."""

    alert_id: str
    created_at: datetime = Field(description="when the gateway saw the threshold passed")
    user_id: str
    user_email: str | None = None
    user_name: str | None = None
    period: Literal["daily", "monthly"]
    period_start: date
    threshold: float = Field(description="fraction of the period's limit, e.g. 0.8")
    limit_usd: str = Field(description="decimal string")
    spent_usd: str = Field(description="decimal string: the spend when the threshold was passed")
    resets_at: datetime
    delivery: Literal["sent", "failed", "no_webhook"] = Field(
        description="sent: the webhook took it; failed: every attempt failed; no_webhook: BUDGET_ALERT_WEBHOOK_URL is unset"
    )
    attempts: int = Field(description="webhook posts made (0 without a webhook)")


class BudgetAlertsResponse(BaseModel):
    alerts: list[BudgetAlert] = Field(description="newest first")


class UserEntry(BaseModel):
    """A user as the gateway last saw them (otel.gateway_users)."""

    user_id: str
    name: str | None = None
    email: str | None = None
    role: str
    seen_at: datetime = Field(description="when this process first saw them so, or saw them change")


class UsersResponse(BaseModel):
    users: list[UserEntry] = Field(description="most recently seen first")


# --- Open-WebUI feedback (GET /api/usage/feedback) ----------------------------------------------


class FeedbackDimension(StrEnum):
    model = "model"  # the model group the gateway served
    variant = "variant"  # experiment and variant the gateway served (rated requests in an experiment only)
    task = "task"  # '' for the user's own chat


class FeedbackRow(BaseModel):
    """Ratings of the answers the gateway served, grouped by its own record of them."""

    model: str | None = Field(default=None, description="by=model: the served model group")
    experiment: str | None = Field(default=None, description="by=variant")
    variant: str | None = Field(default=None, description="by=variant")
    task: str | None = Field(default=None, description="by=task ('' for the user's own chat)")
    up: int = Field(description="thumbs up (the latest rating per user, chat and message)")
    down: int = Field(description="thumbs down")
    rated: int = Field(description="up + down")
    up_share: float | None = Field(default=None, description="up / rated")
    up_share_low: float | None = Field(default=None, description="Wilson 95 % interval, lower bound")
    up_share_high: float | None = Field(default=None, description="Wilson 95 % interval, upper bound")
    detail_rating_mean: float | None = Field(default=None, description="mean of the 1-10 detail ratings given")
    detail_ratings: int = Field(description="how many ratings had a 1-10 detail rating")


class FeedbackSyncState(BaseModel):
    enabled: bool = Field(description="false: OPEN_WEBUI_ADMIN_TOKEN unset or FEEDBACK_SYNC_INTERVAL_SECONDS=0")
    last_success_at: datetime | None = Field(default=None, description="the last complete poll of this BFF process")
    last_error: str | None = Field(default=None, description="why the last poll failed (none: it succeeded)")


class FeedbackResponse(BaseModel):
    range: Range = Field(description="of the rated requests' time (when the gateway served the answer)")
    by: FeedbackDimension
    experiment: str | None = None
    model: str | None = None
    user: str | None = None
    rows: list[FeedbackRow] = Field(description="most rated first")
    sync: FeedbackSyncState
