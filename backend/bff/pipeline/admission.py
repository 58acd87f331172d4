"""Step 1 of every route: who calls, and may they do this operation now.

Routes declare what they are, as a dependency:

    CHAT = Operation("chat", Permission.chat, paid=True)
    async def route(call: Annotated[Call, Depends(CHAT)]) -> ...

An Operation with a name is a gateway operation: the request gets one span, named by the
operation and the route's path template, starting when the request arrived, so a refused
request is recorded too. It authenticates, records who called (before the role is judged,
so refusals of pending users carry their id), checks the role and the permission and, for
paid operations, the budget (refuse, or mark the call for a downgrade) and the rate limits
(a slot in flight, one request per minute). Admitted: the span is started (ended by the
middleware when the response is sent). Refused here: the span is written at once as a
plain row (Telemetry.record_refused), with the same attributes, without the SDK's span
machinery: a flood of refusals costs the BFF as little as possible (scripts/bench_flood.py),
and a 429 for a caller back before their last Retry-After is held until it is over
(policy/early_retries.py).
"""

from dataclasses import dataclass

from fastapi import Request

from bff.errors import ApiError
from bff.identity.principal import Principal
from bff.pipeline.call import Call
from bff.policy.model import Permission
from bff.services import Services
from bff.telemetry import attributes as attr


@dataclass(frozen=True)
class Operation:
    name: str | None  # None: not a gateway operation (no span), e.g. reading usage
    permission: Permission | None = None  # None: any authenticated caller, the route decides
    paid: bool = False  # refused once the caller's budget is used up

    async def __call__(self, request: Request) -> Call:
        services: Services = request.app.state.services
        call: Call = request.state.call
        if self.name is None or call.operation is not None:  # not an operation, or its span is started
            await self._admit(services, request, call)
            return call
        call.operation = self.name
        route = str(getattr(request.scope.get("route"), "path", request.scope["path"]))
        try:
            await self._admit(services, request, call)
        except ApiError as refusal:  # the error handler answers exc.status; its span is written now
            call.error_type = refusal.code
            await hold_early_retry(services, call, refusal)
            services.telemetry.record_refused(
                self.name, route, request.headers, call.started_ns, call.span_attributes(refusal.status), refusal.status
            )
            raise
        except BaseException:  # not a refusal: the span as for an admitted call, the middleware ends it
            call.span = services.telemetry.start(self.name, route, request.headers, call.started_ns)
            raise
        call.span = services.telemetry.start(self.name, route, request.headers, call.started_ns)
        return call

    async def _admit(self, services: Services, request: Request, call: Call) -> None:
        principal = await admit(services, request, call)
        if self.permission is not None:
            services.access.require(principal, self.permission)
        if self.paid:
            call.downgrade_to = services.budgets.decide(principal, call.budget_periods)
            call.rate_lease = await services.limits.admit(principal)
            if call.rate_lease is not None:
                call.response_headers.update(call.rate_lease.headers)


async def admit(services: Services, request: Request, call: Call) -> Principal:
    """Authenticates and records the caller; their budget state rides on every answer as headers."""
    if call.principal is not None:
        return call.principal
    identity = await services.authenticator.identify(request)
    call.user_id, call.role, call.auth_method = identity.user_id, identity.role, identity.auth.value
    call.session_id = identity.chat_id
    principal = identity.principal()  # refuses pending and unknown roles
    call.admit(principal)
    services.users.seen(principal)  # name and email go to the users table, never on the span
    call.budget_periods = await services.budgets.periods(principal)
    if call.budget is not None:
        call.response_headers.update(call.budget.headers())
    services.budget_alerts.admitted(principal, call.budget_periods, call.response_headers)  # x-budget-warning, alerts
    return principal


async def hold_early_retry(services: Services, call: Call, refusal: ApiError) -> None:
    """A 429 for a caller back before their last Retry-After goes out when that wait is over."""
    if refusal.status != 429:
        return
    retry_after = refusal.headers.get("Retry-After", "")
    held = await services.early_retries.refusing(call.user_id, float(retry_after) if retry_after.isdigit() else 1.0)
    if held:
        call.extra_attributes[attr.REFUSAL_HELD_MS] = round(held * 1000)
