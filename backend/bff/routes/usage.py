"""Usage and cost API over the gateway's spans. Users see their own usage, admins everyone's."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query

from bff.clickhouse import StoreQueryError, StoreUnavailable
from bff.errors import ApiError, forbidden, not_found, unavailable
from bff.identity.principal import Principal
from bff.pipeline.operations import CallerCall
from bff.policy.budget_alerts import MAX_RECENT
from bff.policy.budgets import plain_decimal
from bff.policy.model import Permission
from bff.services import Services, ServicesDep
from bff.usage import feedback_queries, queries
from bff.usage.models import (
    BreakdownResponse,
    Bucket,
    BudgetAlert,
    BudgetAlertsResponse,
    BudgetPeriod,
    BudgetResponse,
    Dimension,
    FeedbackDimension,
    FeedbackResponse,
    FeedbackSyncState,
    RequestDetail,
    RequestTrace,
    SessionRequest,
    SessionResponse,
    SummaryResponse,
    TimeseriesResponse,
    TraceSpan,
    UserEntry,
    UsersResponse,
)
from bff.usage.users import MAX_SEARCH, Named

log = logging.getLogger("bff.usage")
router = APIRouter(prefix="/api/usage", tags=["usage"])
T = TypeVar("T")
Text = Annotated[str | None, Query(max_length=256)]
RequestId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._\-]{1,64}$", description="the x-request-id of a gateway response")]


def usage_query(
    services: ServicesDep,
    call: CallerCall,
    from_: Annotated[datetime | None, Query(alias="from", description="start (ISO 8601); default: 7 days before 'to'")] = None,
    to: Annotated[datetime | None, Query(description="end (ISO 8601, exclusive); default: now")] = None,
    model: Text = None,
    user: Text = None,
    provider: Text = None,
    context: Text = None,
    operation: Annotated[str | None, Query(max_length=64, description="chat, embeddings, audio_speech, ...")] = None,
    status: Annotated[str | None, Query(max_length=5, description="'ok', 'error' or an HTTP status")] = None,
) -> queries.UsageQuery:
    """The caller's filters, with the user filter forced to the caller unless they may read everyone's usage."""
    principal = call.caller
    if principal.is_service_only:
        raise forbidden("a service key without a forwarded user cannot read usage", "user_identity_required")
    if not services.access.has(principal, Permission.usage_all):
        services.access.require(principal, Permission.usage_own)
        if user is not None and user != principal.user_id:
            raise forbidden("you may only read your own usage", "usage_of_others")
        user = principal.user_id
    return queries.UsageQuery.build(
        from_, to, model=model, user=user, provider=provider, context=context, operation=operation, status=status
    )


QueryDep = Annotated[queries.UsageQuery, Depends(usage_query)]


async def run_query(services: Services, work: Callable[[], T]) -> T:
    """A usage-store read off the event loop; store failures as the API's errors (no details)."""
    try:
        return await services.store.run(work)
    except StoreUnavailable:
        raise unavailable("the usage store (ClickHouse) is unavailable; chat is not affected", "usage_store_unavailable") from None
    except StoreQueryError as exc:
        log.error("usage query refused by ClickHouse: %s", exc)  # never sent to the caller
        raise ApiError(500, "the usage query failed", "internal_error", "usage_query_failed") from None


def _fetch(services: Services, sql: str, params: dict[str, Any]) -> Callable[[], list[dict[str, Any]]]:
    return lambda: services.store.query(sql, params)


async def _names(services: Services, principal: Principal, user_ids: list[str]) -> dict[str, Named]:
    """Who the user ids on a page are: for admins from otel.gateway_users (a second small query,
    left out when it fails); a user sees only their own rows, named from their own identity."""
    if services.access.has(principal, Permission.usage_all):
        return await services.store.run(lambda: services.users.names_or_none(user_ids))
    if principal.user_id is not None and principal.user_id in user_ids:
        return {principal.user_id: Named(principal.name, principal.email)}
    return {}


@router.get("/summary", response_model=SummaryResponse, summary="Totals over a time range")
async def summary(services: ServicesDep, query: QueryDep) -> SummaryResponse:
    sql, params, plan = queries.summary_sql(query)
    rows = await run_query(services, _fetch(services, sql, params))
    return SummaryResponse(
        range=query.range(), filters=query.applied(), source=plan.source, totals=queries.summary_result(rows)
    )


@router.get("/timeseries", response_model=TimeseriesResponse, summary="Totals per time bucket")
async def timeseries(services: ServicesDep, query: QueryDep, bucket: Bucket = Bucket.day) -> TimeseriesResponse:
    sql, params, plan = queries.timeseries_sql(query, bucket)
    rows = await run_query(services, _fetch(services, sql, params))
    return TimeseriesResponse(
        range=query.range(),
        filters=query.applied(),
        source=plan.source,
        bucket=bucket,
        points=queries.timeseries_result(rows),
    )


@router.get("/breakdown", response_model=BreakdownResponse, summary="Totals grouped by one dimension")
async def breakdown(
    services: ServicesDep,
    call: CallerCall,
    query: QueryDep,
    by: Dimension,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_ROWS)] = 50,
) -> BreakdownResponse:
    sql, params, plan = queries.breakdown_sql(query, by, limit)
    rows = queries.breakdown_result(await run_query(services, _fetch(services, sql, params)))
    if by is Dimension.user:
        names = await _names(services, call.caller, [row.key for row in rows])
        for row in rows:
            named = names.get(row.key)
            if named is not None:
                row.name, row.email = named.name, named.email
    return BreakdownResponse(range=query.range(), filters=query.applied(), source=plan.source, by=by, rows=rows)


@router.get("/sessions/{session_id}", response_model=SessionResponse, summary="One Open-WebUI chat: totals and requests")
async def session(
    services: ServicesDep,
    query: QueryDep,
    session_id: Annotated[str, Path(min_length=1, max_length=256)],
) -> SessionResponse:
    totals_sql, requests_sql, params = queries.session_sql(query, session_id)

    def work() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return services.store.query(totals_sql, params), services.store.query(requests_sql, params)

    totals, requests = await run_query(services, work)
    return SessionResponse(
        session_id=session_id,
        totals=queries.summary_result(totals),
        requests=[SessionRequest.model_validate({**row, "cost_usd": float(row["cost_usd"])}) for row in requests],
    )


@router.get(
    "/requests/{request_id}",
    response_model=RequestTrace,
    summary="One request by its x-request-id, with every stored span of its trace (Kong, BFF, LiteLLM)",
)
async def request_trace(services: ServicesDep, call: CallerCall, query: QueryDep, request_id: RequestId) -> RequestTrace:
    """404 until the request's span is in ClickHouse; users find only their own requests."""
    request_sql, params = queries.request_sql(query, request_id)

    def work() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        rows = services.store.query(request_sql, params)
        if not rows:
            return None, []
        trace_sql, trace_params = queries.trace_sql(rows[0]["trace_id"], rows[0]["timestamp"])
        return rows[0], services.store.query(trace_sql, trace_params)

    row, spans = await run_query(services, work)
    if row is None:
        raise not_found(f"no stored request '{request_id}' in this range (spans are stored within seconds)", "request_not_found")
    named = (await _names(services, call.caller, [row["user_id"]])).get(row["user_id"])
    who = {"user_name": named.name, "user_email": named.email} if named is not None else {}
    return RequestTrace(
        request_id=request_id,
        trace_id=row["trace_id"],
        request=RequestDetail.model_validate({**row, "cost_usd": float(row["cost_usd"]), **who}),
        spans=[TraceSpan.model_validate(span) for span in spans],
    )


@router.get("/budget", response_model=BudgetResponse, summary="The caller's budget: limit, spend and reset per period")
async def budget(services: ServicesDep, call: CallerCall) -> BudgetResponse:
    principal = call.caller
    if principal.is_service_only or principal.user_id is None:
        raise forbidden("a service key without a forwarded user has no budget", "user_identity_required")
    services.access.require(principal, Permission.usage_own)
    periods = await services.budgets.periods(principal)  # ClickHouse down: the last known spend
    return BudgetResponse(
        user_id=principal.user_id,
        role=principal.role.value if principal.role else "",
        limited=bool(periods),
        periods=[
            BudgetPeriod(
                period=status.period,
                limit_usd=plain_decimal(status.limit_usd),
                spent_usd=plain_decimal(status.spent_usd),
                remaining_usd=plain_decimal(status.remaining_usd),
                resets_at=status.resets_at,
            )
            for status in periods
        ],
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get("/alerts", response_model=BudgetAlertsResponse, summary="Recent budget alerts of every user (usage.all)")
async def alerts(
    services: ServicesDep,
    call: CallerCall,
    limit: Annotated[int, Query(ge=1, le=MAX_RECENT)] = 50,
    user: Text = None,
) -> BudgetAlertsResponse:
    """One row per alert sent (or recorded without a webhook): user, period, threshold, spend, delivery."""
    services.access.require(call.caller, Permission.usage_all)
    rows = await run_query(services, lambda: services.budget_alerts.recent(limit, user))
    return BudgetAlertsResponse(
        alerts=[
            BudgetAlert(
                alert_id=row["alert_id"],
                created_at=_utc(row["created_at"]),
                user_id=row["user_id"],
                user_email=row["user_email"] or None,
                user_name=row["user_name"] or None,
                period=row["period"],
                period_start=row["period_start"],
                threshold=row["threshold"],
                limit_usd=plain_decimal(row["limit_usd"]),
                spent_usd=plain_decimal(row["spent_usd"]),
                resets_at=_utc(row["resets_at"]),
                delivery=row["delivery"],
                attempts=row["attempts"],
            )
            for row in rows
        ]
    )


@router.get("/users", response_model=UsersResponse, summary="People by name: users by id, name or email (usage.all)")
async def users(
    services: ServicesDep,
    call: CallerCall,
    query: Annotated[str, Query(max_length=256, description="part of a user id, name or email (any case); empty: everyone")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH)] = 50,
) -> UsersResponse:
    """The users the gateway has seen, as it last saw them (otel.gateway_users), most recent first."""
    services.access.require(call.caller, Permission.usage_all)
    rows = await run_query(services, lambda: services.users.search(query, limit))
    return UsersResponse(
        users=[
            UserEntry(user_id=row["user_id"], name=row["name"] or None, email=row["email"] or None, role=row["role"],
                      seen_at=_utc(row["seen_at"]))
            for row in rows
        ]
    )  # fmt: skip


# --- Open-WebUI feedback ---------------------------------------------------------------------


@router.get(
    "/feedback",
    response_model=FeedbackResponse,
    summary="Open-WebUI ratings of the answers the gateway served: up-share by model, variant or task (usage.all)",
)
async def feedback(
    services: ServicesDep,
    call: CallerCall,
    by: FeedbackDimension = FeedbackDimension.model,
    from_: Annotated[datetime | None, Query(alias="from", description="served from (ISO 8601); default: 7 days before 'to'")] = None,
    to: Annotated[datetime | None, Query(description="served before (ISO 8601); default: now")] = None,
    experiment: Text = None,
    model: Text = None,
    user: Text = None,
) -> FeedbackResponse:
    """Ratings pulled from Open-WebUI (otel.gateway_feedback), joined to the gateway's own requests on
    (user, chat, message): the model, variant and task are what the gateway served, never what the
    browser said. One rating per message (the latest); the up-share has a Wilson 95 % interval."""
    services.access.require(call.caller, Permission.usage_all)
    span = queries.UsageQuery.build(from_, to)  # the range checks of the usage API
    query = feedback_queries.FeedbackQuery(span.start, span.end, by, experiment=experiment, model=model, user=user)
    sql, params = feedback_queries.feedback_sql(query)
    rows = await run_query(services, _fetch(services, sql, params))
    status = services.feedback.status
    return FeedbackResponse(
        range=span.range(),
        by=by,
        experiment=experiment,
        model=model,
        user=user,
        rows=feedback_queries.feedback_result(rows, by),
        sync=FeedbackSyncState(enabled=status.enabled, last_success_at=status.last_success_at, last_error=status.last_error),
    )
