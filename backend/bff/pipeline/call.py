"""The record of one gateway request, filled step by step by the pipeline.

When the response has been sent (streams included) it becomes the request's one span
and its access-log line. Never message content.
"""

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from opentelemetry.sdk.trace import Span

from bff.identity.principal import Principal
from bff.policy.budgets import BudgetStatus
from bff.policy.rate_limits import Lease
from bff.telemetry import attributes as attr


class Outcome(StrEnum):
    """How a request ended, whatever HTTP status its response started with."""

    completed = "completed"  # answered in full
    refused = "refused"  # a 4xx before any content: the gateway, LiteLLM or the provider said no
    upstream_failed = "upstream_failed"  # LiteLLM or the provider failed: a 5xx, or a stream cut by them
    client_disconnected = "client_disconnected"  # the caller left before the answer was complete


@dataclass
class Call:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    started_ns: int = field(default_factory=time.time_ns)
    operation: str | None = None  # set by the route's Operation: only operations get a span
    span: Span | None = None
    # Who: known from authentication on, even when the role is then refused (pending users).
    user_id: str | None = None
    role: str | None = None
    auth_method: str | None = None
    session_id: str | None = None
    principal: Principal | None = None  # set once admitted
    budget_periods: list[BudgetStatus] = field(default_factory=list)  # every limited period of the caller
    downgrade_to: str | None = None  # past the budget: the model that serves this chat instead
    rate_lease: Lease | None = None  # the rate-limit slot and token reservation, released when sent
    charged: bool = False  # the cost is in the budget (before the answer went out)
    # What
    model: str | None = None  # as requested
    model_group: str | None = None  # as served, after fallback
    provider: str | None = None
    deployment_id: str | None = None
    context: str | None = None
    task: str | None = None  # /api/llm/generate's task, or the Open-WebUI task call (title, tags, ...)
    message_id: str | None = None  # Open-WebUI's message id (X-OpenWebUI-Message-Id): joins its ratings
    experiment: str | None = None  # the active experiment that picked the model, and its variant
    variant: str | None = None
    stream: bool | None = None
    # Accounting
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None
    cost_estimated: bool = False  # tokens and cost estimated (stream cut before LiteLLM's usage)
    outcome: Outcome | None = None
    error_type: str | None = None
    ttft_ms: float | None = None
    retries: int | None = None
    fallbacks: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # added to whatever answer is sent
    extra_attributes: dict[str, str | int | float] = field(default_factory=dict)  # operation-specific
    span_detached: bool = False  # a background job ends the span, not the middleware

    @property
    def budget(self) -> BudgetStatus | None:
        """The binding budget period (least left), when the caller has a limit."""
        return min(self.budget_periods, key=lambda status: status.remaining_usd, default=None)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def caller(self) -> Principal:
        """The admitted caller (routes run after their Operation admitted them)."""
        if self.principal is None:
            raise RuntimeError("the route's Operation did not admit the caller")
        return self.principal

    def admit(self, principal: Principal) -> None:
        self.principal = principal
        self.user_id = principal.user_id
        self.role = principal.role.value if principal.role else None
        self.auth_method = principal.auth.value
        self.session_id = principal.chat_id

    def fail(self, code: str, outcome: Outcome) -> None:
        self.error_type = code
        self.outcome = outcome

    def final_outcome(self, status: int) -> Outcome:
        if self.outcome is not None:
            return self.outcome
        if status >= 500:
            return Outcome.upstream_failed
        return Outcome.refused if status >= 400 else Outcome.completed

    def span_attributes(self, status: int) -> dict[str, Any]:
        return {
            attr.REQUEST_ID: self.request_id,
            attr.HTTP_STATUS: status,
            attr.ERROR_TYPE: self.error_type,
            attr.OUTCOME: self.final_outcome(status).value,
            attr.USER_ID: self.user_id,
            attr.ROLE: self.role,
            attr.AUTH_METHOD: self.auth_method,
            attr.SESSION_ID: self.session_id,
            attr.REQUEST_MODEL: self.model,
            attr.RESPONSE_MODEL: self.model_group,
            attr.PROVIDER: self.provider,
            attr.DEPLOYMENT_ID: self.deployment_id,
            attr.CONTEXT: self.context,
            attr.TASK: self.task,
            attr.MESSAGE_ID: self.message_id,
            attr.EXPERIMENT: self.experiment,
            attr.VARIANT: self.variant,
            attr.STREAM: None if self.stream is None else str(self.stream).lower(),
            attr.INPUT_TOKENS: self.prompt_tokens,
            attr.OUTPUT_TOKENS: self.completion_tokens,
            attr.TOTAL_TOKENS: self.total_tokens,
            attr.COST_USD: None if self.cost_usd is None else format(self.cost_usd, "f"),
            attr.COST_ESTIMATED: "true" if self.cost_estimated else None,
            attr.TTFT_MS: None if self.ttft_ms is None else round(self.ttft_ms, 3),
            attr.RETRIES: self.retries,
            attr.FALLBACKS: self.fallbacks,
            **self.extra_attributes,
        }

    def log_line(self, method: str, path: str, status: int) -> str:
        entry = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(self.elapsed_ms(), 2),
            "request_id": self.request_id,
            "principal_id": self.user_id or ("service" if self.auth_method else None),
            "model": self.model,
            "served_model": self.model_group if self.model_group != self.model else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "outcome": self.outcome.value if self.outcome else None,
            "cost_estimated": self.cost_estimated or None,
            "error": self.error_type,
        }
        return json.dumps({key: value for key, value in entry.items() if value is not None})
