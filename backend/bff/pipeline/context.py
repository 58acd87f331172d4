"""The outermost layer: a request id for every request, and step 7 of the pipeline.

Once the response has been sent (streams included), the call's cost counts in the
caller's budget and the call becomes its one span and one access-log line. An image
job that outlives its request ends its span itself (`span_detached`).
"""

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.pipeline.call import Call
from bff.policy.budgets import BudgetGuard
from bff.telemetry.tracing import Telemetry

log = logging.getLogger("bff.access")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


def record_call(call: Call, status: int, budgets: BudgetGuard) -> None:
    """Charges the call's cost to the caller (until the store holds it) and ends its span."""
    span = call.span
    if span is None:
        return
    if call.cost_usd and call.user_id is not None and call.principal is not None:
        budgets.finished(call.user_id, Telemetry.span_id(span), call.cost_usd)  # before the span ends
    Telemetry.finish(span, call.span_attributes(status), status)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, budgets: BudgetGuard):
        self.app = app
        self.budgets = budgets

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
            if not call.span_detached:
                record_call(call, status, self.budgets)
            if log.isEnabledFor(logging.INFO):
                # the path as the BFF routes it: uvicorn puts PUBLIC_PATH_PREFIX in front of every path
                path: str = scope["path"]
                root = scope.get("root_path", "")
                log.info(call.log_line(scope["method"], path[len(root) :] if root and path.startswith(root) else path, status))
