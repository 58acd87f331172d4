"""The outermost layer: a request id for every request, and step 7 of the pipeline.

Once the response has been sent (streams included), the call's cost counts in the
caller's budget and the call becomes its one span and one access-log line. An image
job that outlives its request ends its span itself (`span_detached`).
"""

import logging
import re
import uuid

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.pipeline.call import Call
from bff.policy.budget_alerts import BudgetAlerts
from bff.policy.budgets import BudgetGuard
from bff.policy.rate_limits import RateLimiter
from bff.telemetry.tracing import Telemetry

log = logging.getLogger("bff.access")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


async def charge(call: Call, budgets: BudgetGuard) -> None:
    """Counts the call's cost in the caller's budget (until the store holds it), once.
    The pipeline charges an answer before sending it, so the caller's next request, on any
    replica, already sees it; whatever is left is charged when the response has been sent."""
    if call.charged or not call.cost_usd or call.span is None or call.user_id is None or call.principal is None:
        return
    call.charged = True
    try:
        await budgets.finished(call.user_id, Telemetry.span_id(call.span), call.cost_usd)
    except RedisError as exc:  # the span still carries the cost: it counts once ClickHouse holds it
        log.error("could not count a cost of user %s before it is stored: %s", call.user_id, type(exc).__name__)


async def record_call(call: Call, status: int, budgets: BudgetGuard, alerts: BudgetAlerts | None = None) -> None:
    """Charges the call's cost to the caller and ends its span."""
    span = call.span
    if span is None:
        return
    await charge(call, budgets)  # before the span ends
    if alerts is not None and call.charged and call.principal is not None:
        alerts.spent(call.principal)  # budget alerts look at the new spend in a task: never delays the response
    Telemetry.finish(span, call.span_attributes(status), status)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, budgets: BudgetGuard, limits: RateLimiter, alerts: BudgetAlerts):
        self.app = app
        self.budgets = budgets
        self.limits = limits
        self.alerts = alerts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), "")
        call = Call(request_id=incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex)
        scope.setdefault("state", {})["call"] = call
        status = 500

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = {REQUEST_ID_HEADER: call.request_id, **call.response_headers}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name.encode(), value.encode()) for name, value in extra.items()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            try:
                await self.limits.release(call.rate_lease, call.total_tokens)  # its slot, its real tokens
            except RedisError as exc:  # the slot's lease runs out by itself
                log.warning("could not release a rate-limit slot: %s", type(exc).__name__)
            if not call.span_detached:
                await record_call(call, status, self.budgets, self.alerts)
            if log.isEnabledFor(logging.INFO):
                # the path as the BFF routes it: uvicorn puts PUBLIC_PATH_PREFIX in front of every path
                path: str = scope["path"]
                root = scope.get("root_path", "")
                log.info(call.log_line(scope["method"], path[len(root) :] if root and path.startswith(root) else path, status))
