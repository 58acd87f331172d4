"""Typed answers of the experiments API (GET /api/experiments, GET /api/experiments/{name})."""

from datetime import datetime

from pydantic import BaseModel, Field

from bff.usage.models import Range


class TargetOut(BaseModel):
    model: str | None = Field(None, description="a model name as callers send it (e.g. an alias)")
    task: str | None = Field(None, description="a task of /api/llm/generate or an Open-WebUI task call")
    context: str | None = Field(None, description="an X-LLM-Context value")


class VariantConfig(BaseModel):
    name: str
    model: str
    weight: int
    share: float = Field(description="the weight's share of all weights (0-1)")
    control: bool = False


class VariantHeadline(BaseModel):
    variant: str
    requests: int


class ExperimentSummary(BaseModel):
    name: str
    description: str | None = None
    target: TargetOut
    variants: list[VariantConfig]
    control: str
    start: datetime
    end: datetime
    active: bool = Field(description="start <= now < end (UTC)")
    range: Range = Field(description="the window the request counts cover: the experiment's (its last 400 days at most) or the one asked for")
    requests: list[VariantHeadline] = Field(description="requests per variant served in the window")


class ExperimentList(BaseModel):
    experiments: list[ExperimentSummary]


class LatencyPercentiles(BaseModel):
    """Exact quantiles (ClickHouse quantilesExact: the value at position floor(n x level) of the sorted values)."""

    p50: float | None = None
    p95: float | None = None


class WilsonInterval(BaseModel):
    low: float
    high: float


class Feedback(BaseModel):
    up: int = 0
    down: int = 0
    up_share: float | None = Field(None, description="up / (up + down); null without ratings")
    up_share_95: WilsonInterval | None = Field(None, description="Wilson score interval (z = 1.96) of the up-share")


class VariantResult(BaseModel):
    variant: str
    model: str | None = Field(description="the configured model; null for a variant no longer in the file")
    configured: bool = True
    control: bool = False
    users: int = 0
    requests: int = 0
    errors: int = Field(0, description="HTTP status >= 400, or a stream that failed after it started")
    error_rate: float | None = None
    cost_usd: float = Field(0.0, description="exact decimal sum in ClickHouse, sent as a JSON number")
    cost_per_request_usd: float | None = None
    latency_ms: LatencyPercentiles = Field(default_factory=LatencyPercentiles)
    ttft_ms: LatencyPercentiles = Field(
        default_factory=LatencyPercentiles, description="p50 time to first token of streamed requests (p95 given too)"
    )
    feedback: Feedback = Field(default_factory=Feedback)


class ExperimentResults(BaseModel):
    experiment: ExperimentSummary
    range: Range
    control: str
    variants: list[VariantResult]
