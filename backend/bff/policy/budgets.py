"""Per-user USD budgets: daily and monthly limits from the policy, spend from ClickHouse.

Spend = the user's cost in the daily rollup (cached for a few seconds) + the cost of
requests this process finished that ClickHouse did not yet hold when that snapshot
was taken. The exporter reports each delivered batch; the snapshot query and span
inserts share the store's lock, so a delivery sequence number read inside the
snapshot query tells exactly which finished requests the snapshot already contains.
With OTLP export there is no delivery report: each snapshot first asks ClickHouse which of
the user's finished requests the collector has stored (by span id), then reads the sums,
so a request counts once: unsettled until its row is there, in the sums after. (A row
stored between the two reads counts twice until the next snapshot: never zero times.)
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from bff.clickhouse import ClickHouseStore, StoreError
from bff.errors import rate_limited
from bff.identity.principal import Principal
from bff.policy.access import AccessPolicy
from bff.policy.model import Budget

log = logging.getLogger("bff.budgets")

# A finished cost the store never receives (the collector or the exporter's buffer lost it) stops counting after this.
UNSTORED_SECONDS = 3600.0
# Delivered costs of users who stop calling are forgotten after this; it exceeds any cache TTL.
FORGET_AFTER_SECONDS = 120.0
# How often the costs of users who stopped calling are looked at (a request looks only at its caller's).
SWEEP_SECONDS = 30.0
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

    @property
    def exhausted(self) -> bool:
        return self.remaining_usd <= 0

    def headers(self) -> dict[str, str]:
        values = (
            self.period,
            plain_decimal(self.limit_usd),
            plain_decimal(max(self.remaining_usd, Decimal(0))),
            self.resets_at.isoformat(),
        )
        return dict(zip(BUDGET_HEADERS, values, strict=True))


def plain_decimal(amount: Decimal) -> str:
    """'0.000015' rather than '1.5E-5' or '0.0000150'."""
    return format(amount.normalize(), "f")


@dataclass
class _Snapshot:
    day: date
    daily: Decimal
    monthly: Decimal
    sequence: int  # deliveries the snapshot includes (own exporter)
    taken: float  # monotonic
    stored: frozenset[str] = frozenset()  # finished span ids the store held before the sums were read (OTLP)


@dataclass
class _Unsettled:
    day: date
    cost: Decimal
    finished: float  # monotonic
    delivered_in: int | None = None  # delivery sequence that brought it to ClickHouse


def _period_ends(today: date) -> tuple[datetime, datetime]:
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    next_month = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    return tomorrow, datetime.combine(next_month, datetime.min.time(), UTC)


class BudgetGuard:
    def __init__(self, access: AccessPolicy, store: ClickHouseStore, cache_seconds: float, delivery_reports: bool):
        self._access = access
        self._store = store
        self._cache_seconds = cache_seconds
        self._delivery_reports = delivery_reports
        self._lock = threading.Lock()  # the exporter thread reports deliveries
        self._sequence = 0
        # user -> span id -> cost: per user, so a request looks at its caller's costs only
        self._unsettled: dict[str, dict[str, _Unsettled]] = {}
        self._owners: dict[str, str] = {}  # span id -> user, for the exporter's delivery reports
        self._swept = time.monotonic()
        self._snapshots: dict[str, _Snapshot] = {}

    def budget_for(self, principal: Principal) -> Budget:
        return self._access.effective(principal).budget

    def finished(self, user_id: str, span_id: str, cost: Decimal) -> None:
        """A request's cost is known; it counts until ClickHouse holds it."""
        with self._lock:
            self._unsettled.setdefault(user_id, {})[span_id] = _Unsettled(datetime.now(UTC).date(), cost, time.monotonic())
            self._owners[span_id] = user_id

    def delivered(self, span_ids: list[str]) -> None:
        """Called by the span exporter after a batch is in ClickHouse."""
        with self._lock:
            self._sequence += 1
            for span_id in span_ids:
                entry = self._unsettled.get(self._owners.get(span_id, ""), {}).get(span_id)
                if entry is not None:
                    entry.delivered_in = self._sequence

    async def status(self, principal: Principal) -> BudgetStatus | None:
        """The binding period's state, or None when the caller has no limit."""
        periods = await self.periods(principal)
        return min(periods, key=lambda status: status.remaining_usd) if periods else None

    async def periods(self, principal: Principal) -> list[BudgetStatus]:
        """The state of every limited period of the caller (empty: no limit)."""
        if principal.user_id is None:
            return []
        budget = self.budget_for(principal)
        if budget.daily_usd is None and budget.monthly_usd is None:
            return []
        today = datetime.now(UTC).date()
        snapshot = await self._snapshot(principal.user_id, today)
        daily, monthly = self._spend(principal.user_id, snapshot, today)
        tomorrow, next_month = _period_ends(today)
        return [
            BudgetStatus(period=period, limit_usd=limit, spent_usd=spent, remaining_usd=limit - spent, resets_at=reset)
            for period, limit, spent, reset in (
                ("daily", budget.daily_usd, daily, tomorrow),
                ("monthly", budget.monthly_usd, monthly, next_month),
            )
            if limit is not None
        ]

    @staticmethod
    def enforce(status: BudgetStatus | None) -> None:
        """Refuses a paid call once the binding period's budget is used up."""
        if status is not None and status.exhausted:
            retry_after = max(1, int((status.resets_at - datetime.now(UTC)).total_seconds()))
            error = rate_limited(
                f"your {status.period} budget of ${status.limit_usd} is used up; it resets at {status.resets_at.isoformat()}",
                str(retry_after),
                code="budget_exceeded",
            )
            # OpenAI's SDKs retry 429s unless told not to; a used-up budget does not come back in seconds.
            error.headers["x-should-retry"] = "false"
            raise error

    async def _snapshot(self, user_id: str, today: date) -> _Snapshot | None:
        cached = self._snapshots.get(user_id)
        if cached is not None and cached.day == today and time.monotonic() - cached.taken < self._cache_seconds:
            return cached
        params = {"user": user_id, "today": today, "month_start": today.replace(day=1)}
        with self._lock:
            pending = list(self._unsettled.get(user_id, {}))

        def query() -> _Snapshot:
            def inside_store_lock(client) -> _Snapshot:  # type: ignore[no-untyped-def]
                with self._lock:
                    sequence = self._sequence  # no insert can run while the store lock is held
                stored: frozenset[str] = frozenset()
                if not self._delivery_reports and pending:  # ids first, then sums: never counted zero times
                    rows = client.query(_STORED_SQL, parameters={**params, "spans": pending}).result_rows
                    stored = frozenset(row[0] for row in rows)
                row = client.query(_SPEND_SQL, parameters=params).first_row
                return _Snapshot(today, Decimal(row[1] or 0), Decimal(row[0] or 0), sequence, time.monotonic(), stored)

            return self._store.call(inside_store_lock)

        try:
            snapshot = await self._store.run(query)
        except StoreError as exc:
            # Chat keeps working while ClickHouse is down: the last snapshot and this process's costs still count.
            log.warning("budget spend unavailable (%s); using the last known spend", exc)
            return cached
        self._snapshots[user_id] = snapshot
        return snapshot

    def _spend(self, user_id: str, snapshot: _Snapshot | None, today: date) -> tuple[Decimal, Decimal]:
        daily = snapshot.daily if snapshot and snapshot.day == today else Decimal(0)
        monthly = snapshot.monthly if snapshot and snapshot.day.month == today.month else Decimal(0)
        now = time.monotonic()
        with self._lock:
            mine = self._unsettled.get(user_id, {})
            for span_id, entry in list(mine.items()):
                if self._settled(span_id, entry, snapshot, now):
                    self._forget(user_id, span_id)
                    continue
                if entry.day == today:
                    daily += entry.cost
                if entry.day.month == today.month and entry.day.year == today.year:
                    monthly += entry.cost
            if now - self._swept > SWEEP_SECONDS:
                self._sweep(now)
        return daily, monthly

    def _sweep(self, now: float) -> None:
        """Forgets the costs of users who stopped calling, once no snapshot of theirs can need them."""
        self._swept = now
        for user_id, entries in list(self._unsettled.items()):
            for span_id, entry in list(entries.items()):
                delivered = entry.delivered_in is not None
                if (delivered and now - entry.finished > FORGET_AFTER_SECONDS) or now - entry.finished > UNSTORED_SECONDS:
                    self._forget(user_id, span_id)

    def _forget(self, user_id: str, span_id: str) -> None:
        entries = self._unsettled[user_id]
        del entries[span_id]
        self._owners.pop(span_id, None)
        if not entries:
            del self._unsettled[user_id]

    def _settled(self, span_id: str, entry: _Unsettled, snapshot: _Snapshot | None, now: float) -> bool:
        if self._delivery_reports:
            return snapshot is not None and entry.delivered_in is not None and entry.delivered_in <= snapshot.sequence
        return (snapshot is not None and span_id in snapshot.stored) or now - entry.finished > UNSTORED_SECONDS
