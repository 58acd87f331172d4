"""Per-user USD budgets: daily and monthly limits from the effective policy, spend from ClickHouse.

Spend = the user's cost in the daily rollup (cached for a few seconds) + the finished costs
that snapshot does not contain yet (policy/spend_ledger.py: in this process, or in Redis
for every replica). Past a limit the caller's `when_exceeded` decides: refuse, or downgrade
chat to a cheaper model until the hard ceiling.
"""

import logging
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from bff.clickhouse import ClickHouseStore, StoreError
from bff.errors import ApiError, rate_limited
from bff.identity.principal import Principal
from bff.policy.access import AccessPolicy
from bff.policy.model import Budget, WhenExceeded
from bff.policy.spend_ledger import SpendLedger, SpendSnapshot

log = logging.getLogger("bff.budgets")

_STORED_SQL = (
    "SELECT SpanId FROM otel.gateway_requests WHERE UserId = {user:String} AND toDate(Timestamp) >= {month_start:Date} "
    "AND SpanId IN {spans:Array(String)}"
)
_SPEND_SQL = (
    "SELECT sum(CostUsd) AS month, sumIf(CostUsd, Day = {today:Date}) AS day FROM otel.gateway_usage_daily "
    "WHERE UserId = {user:String} AND Day >= {month_start:Date} AND Day <= {today:Date}"
)

Period = Literal["daily", "monthly"]
BUDGET_HEADERS = ("x-budget-period", "x-budget-limit-usd", "x-budget-remaining-usd", "x-budget-reset")


class BudgetStatus(BaseModel):
    period: Period
    limit_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    resets_at: datetime
    hard_limit_usd: Decimal | None = None  # past the limit a downgrade serves until this ceiling

    @property
    def exhausted(self) -> bool:
        return self.remaining_usd <= 0

    @property
    def past_ceiling(self) -> bool:
        return self.hard_limit_usd is None or self.spent_usd >= self.hard_limit_usd

    def headers(self) -> dict[str, str]:
        values = (
            self.period,
            plain_decimal(self.limit_usd),
            plain_decimal(max(self.remaining_usd, Decimal(0))),
            self.resets_at.isoformat(),
        )
        return dict(zip(BUDGET_HEADERS, values, strict=True))


def budget_refusal(status: BudgetStatus, ceiling: Decimal | None) -> ApiError:
    """429 budget_exceeded until the period resets (`ceiling`: the hard limit that was reached)."""
    retry_after = max(1, int((status.resets_at - datetime.now(UTC)).total_seconds()))
    limit = ceiling if ceiling is not None else status.limit_usd
    error = rate_limited(
        f"your {status.period} budget of ${limit} is used up; it resets at {status.resets_at.isoformat()}",
        str(retry_after),
        code="budget_exceeded",
    )
    # OpenAI's SDKs retry 429s unless told not to; a used-up budget does not come back in seconds.
    error.headers["x-should-retry"] = "false"
    return error


def plain_decimal(amount: Decimal) -> str:
    """'0.000015' rather than '1.5E-5' or '0.0000150'."""
    return format(amount.normalize(), "f")


def _period_ends(today: date) -> tuple[datetime, datetime]:
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    next_month = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    return tomorrow, datetime.combine(next_month, datetime.min.time(), UTC)


class BudgetGuard:
    def __init__(self, access: AccessPolicy, store: ClickHouseStore, cache_seconds: float, ledger: SpendLedger):
        self._access = access
        self._store = store
        self._cache_seconds = cache_seconds
        self.ledger = ledger
        self._snapshots: dict[str, SpendSnapshot] = {}

    def budget_for(self, principal: Principal) -> Budget:
        return self._access.effective(principal).budget

    async def finished(self, user_id: str, span_id: str, cost: Decimal) -> None:
        """A request's cost is known; it counts until ClickHouse holds it (on every replica, with Redis)."""
        await self.ledger.add(user_id, span_id, datetime.now(UTC).date(), cost)

    def delivered(self, span_ids: list[str]) -> None:
        """Called by the span exporter after a batch is in ClickHouse."""
        self.ledger.delivered(span_ids)

    async def periods(self, principal: Principal) -> list[BudgetStatus]:
        """The state of every limited period of the caller (empty: no limit)."""
        if principal.user_id is None:
            return []
        budget = self.budget_for(principal)
        if budget.daily_usd is None and budget.monthly_usd is None:
            return []
        today = datetime.now(UTC).date()
        snapshot = await self._snapshot(principal.user_id, today)
        daily, monthly = await self._spend(principal.user_id, snapshot, today)
        tomorrow, next_month = _period_ends(today)
        return [
            BudgetStatus(
                period=period, limit_usd=limit, spent_usd=spent, remaining_usd=limit - spent, resets_at=reset, hard_limit_usd=hard
            )
            for period, limit, hard, spent, reset in (
                ("daily", budget.daily_usd, budget.hard_daily_usd, daily, tomorrow),
                ("monthly", budget.monthly_usd, budget.hard_monthly_usd, monthly, next_month),
            )
            if limit is not None
        ]

    def decide(self, principal: Principal, periods: list[BudgetStatus]) -> str | None:
        """For a paid call: None within budget; past a limit the model that serves chat instead
        (`downgrade`), or 429 budget_exceeded (`refuse`, or past the hard ceiling)."""
        exhausted = [status for status in periods if status.exhausted]
        if not exhausted:
            return None
        budget = self.budget_for(principal)
        if budget.when_exceeded is WhenExceeded.downgrade and budget.downgrade_to and not any(s.past_ceiling for s in exhausted):
            return budget.downgrade_to
        status = max(exhausted, key=lambda s: s.resets_at)  # the refusal lasts until the last of them resets
        ceiling = status.hard_limit_usd if budget.when_exceeded is WhenExceeded.downgrade else None
        raise budget_refusal(status, ceiling)

    async def _snapshot(self, user_id: str, today: date) -> SpendSnapshot | None:
        cached = self._snapshots.get(user_id)
        if cached is not None and cached.day == today and time.monotonic() - cached.taken < self._cache_seconds:
            return cached
        params = {"user": user_id, "today": today, "month_start": today.replace(day=1)}
        pending = await self.ledger.pending(user_id)  # empty when the ledger hears of deliveries

        def query() -> SpendSnapshot:
            def inside_store_lock(client) -> SpendSnapshot:  # type: ignore[no-untyped-def]
                sequence = self.ledger.sequence()  # no insert can run while the store lock is held
                stored: frozenset[str] = frozenset()
                if pending:  # ids first, then sums: never counted zero times
                    rows = client.query(_STORED_SQL, parameters={**params, "spans": pending}).result_rows
                    stored = frozenset(row[0] for row in rows)
                row = client.query(_SPEND_SQL, parameters=params).first_row
                return SpendSnapshot(today, Decimal(row[1] or 0), Decimal(row[0] or 0), sequence, time.monotonic(), stored)

            return self._store.call(inside_store_lock)

        try:
            snapshot = await self._store.run(query)
        except StoreError as exc:
            # Chat keeps working while ClickHouse is down: the last snapshot and the unsettled costs still count.
            log.warning("budget spend unavailable (%s); using the last known spend", exc)
            return cached
        self._snapshots[user_id] = snapshot
        return snapshot

    async def _spend(self, user_id: str, snapshot: SpendSnapshot | None, today: date) -> tuple[Decimal, Decimal]:
        daily = snapshot.daily if snapshot and snapshot.day == today else Decimal(0)
        monthly = snapshot.monthly if snapshot and snapshot.day.month == today.month else Decimal(0)
        extra_daily, extra_monthly = await self.ledger.outstanding(user_id, snapshot, today)
        return daily + extra_daily, monthly + extra_monthly
