"""Per-request context: request id, the gateway span, and one structured access-log line.

Routes fill the RequestRecord as they learn who called and what was used; when the
response has been sent (streams included) the record becomes the span's attributes
and the access-log line. Never message content.
"""

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from opentelemetry.sdk.trace import Span
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.identity.principal import Principal
from bff.policy.budgets import BudgetGuard, BudgetStatus
from bff.telemetry import attributes as attr
from bff.telemetry.tracing import Telemetry

log = logging.getLogger("bff.access")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


@dataclass
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    span: Span | None = None
    principal: Principal | None = None
    budget: BudgetStatus | None = None  # the caller's binding budget period, when they have a limit
    model: str | None = None  # as requested
    model_group: str | None = None  # as served, after fallback
    provider: str | None = None
    deployment_id: str | None = None
    context: str | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None
    ttft_ms: float | None = None
    retries: int | None = None
    fallbacks: int | None = None
    error_type: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # added to whatever answer is sent
    extra_attributes: dict[str, str | int | float] = field(default_factory=dict)  # route-specific span attributes
    span_detached: bool = False  # the route ends the span itself (a background job), not the middleware

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def span_attributes(self, status: int) -> dict[str, Any]:
        principal = self.principal
        return {
            attr.REQUEST_ID: self.request_id,
            attr.HTTP_STATUS: status,
            attr.ERROR_TYPE: self.error_type,
            attr.USER_ID: principal.user_id if principal else None,
            attr.ROLE: principal.role.value if principal and principal.role else None,
            attr.AUTH_METHOD: principal.auth.value if principal else None,
            attr.SESSION_ID: principal.chat_id if principal else None,
            attr.REQUEST_MODEL: self.model,
            attr.RESPONSE_MODEL: self.model_group,
            attr.PROVIDER: self.provider,
            attr.DEPLOYMENT_ID: self.deployment_id,
            attr.CONTEXT: self.context,
            attr.STREAM: None if self.stream is None else str(self.stream).lower(),
            attr.INPUT_TOKENS: self.prompt_tokens,
            attr.OUTPUT_TOKENS: self.completion_tokens,
            attr.TOTAL_TOKENS: self.total_tokens,
            attr.COST_USD: None if self.cost_usd is None else format(self.cost_usd, "f"),
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
            "principal_id": (self.principal.user_id or "service") if self.principal else None,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "error": self.error_type,
        }
        return json.dumps({key: value for key, value in entry.items() if value is not None})


def end_span(record: RequestRecord, status: int, budgets: BudgetGuard) -> None:
    """Ends the request's span; its cost counts in the budget until the span is in ClickHouse."""
    span, principal = record.span, record.principal
    if span is None:
        return
    if record.cost_usd and principal is not None and principal.user_id is not None:
        budgets.finished(principal.user_id, Telemetry.span_id(span), record.cost_usd)  # before the span ends
    Telemetry.finish(span, record.span_attributes(status), status)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, telemetry: Telemetry, budgets: BudgetGuard):
        self.app = app
        self.telemetry = telemetry
        self.budgets = budgets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        incoming = headers.get(REQUEST_ID_HEADER, "")
        record = RequestRecord(request_id=incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex)
        record.span = self.telemetry.start(scope["path"], headers)
        scope.setdefault("state", {})["record"] = record
        status = 500

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = {REQUEST_ID_HEADER: record.request_id, **record.response_headers}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name.encode(), value.encode()) for name, value in extra.items()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            if not record.span_detached:
                end_span(record, status, self.budgets)
            if log.isEnabledFor(logging.INFO):
                log.info(record.log_line(scope["method"], scope["path"], status))
