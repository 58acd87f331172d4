"""Budget alerts: one webhook post per user, period, period start and threshold passed.

`budgets.alerts` in the policy lists fractions of a period's limit (e.g. [0.8, 0.95]). Once a
user's spend in a period (daily, monthly: BudgetGuard.periods) reaches `threshold x limit`, one
alert goes to BUDGET_ALERT_WEBHOOK_URL as JSON: a Slack-compatible `text` plus structured
fields (user id, email and name when known, period, threshold, limit, spend, period start,
reset). Never a secret (the webhook URL, tokens, keys) and never prompt text. Several
thresholds passed by one expensive request: one alert each. Spend is looked at when a caller
is admitted (it also catches spend this request did not make: image jobs, other replicas) and
after each paid call has been charged (record_call); the answers of a user past a threshold
carry `x-budget-warning: <period>=<highest threshold passed>`.

De-duplication, in this order:
  1. in-process: alerts this process handled (or is handling) are not looked at again;
  2. with REDIS_URL: a claim `SET NX` on llm-bff:budget-alert:<period>:<start>:<threshold>:<user>,
     first a lease (long enough for every attempt), then `sent` kept past the period's end,
     so of N replicas exactly one sends;
  3. ClickHouse: otel.gateway_budget_alerts holds one row per handled alert (the monitoring
     page lists it); an alert with a row is not sent again, so a restart does not resend
     (and neither does a Redis that lost its keys).

Delivery is AT-LEAST-ONCE: the row (and Redis's `sent`) is written after the delivery ended. A
process that dies between its claim and the end of the delivery leaves no row; its Redis lease
expires (`lease_seconds`) and the next look at that user's spend (their next request, on any
replica) sends the alert. A duplicate is then possible only when the process dies after the
receiver accepted the post and before the row was written (milliseconds). Chosen because a
missed alert is the worse failure: nobody hears that a user is about to be cut off, while a
repeated chat message is harmless. A delivery that fails on every attempt (bounded, with
backoff) is recorded as `failed` and not retried later, so a dead webhook does not cost every
request a round of retries. Without a webhook URL alerts are still recorded (`no_webhook`) and
the warning header is still sent.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import httpx
from redis.exceptions import RedisError

from bff import shared_state
from bff.clickhouse import ClickHouseStore, StoreError
from bff.identity.principal import Principal
from bff.policy.access import AccessPolicy
from bff.policy.budgets import BudgetGuard, BudgetStatus, Period, plain_decimal
from bff.settings import Settings

log = logging.getLogger("bff.budget_alerts")

WARNING_HEADER = "x-budget-warning"
ALERTS_TABLE = "otel.gateway_budget_alerts"
COLUMNS = (
    "Timestamp", "AlertId", "UserId", "UserEmail", "UserName", "Period", "PeriodStart", "Threshold",
    "LimitUsd", "SpentUsd", "ResetsAt", "Delivery", "Attempts",
)  # fmt: skip
BACKOFF_SECONDS = 0.5  # before the second attempt; doubles up to BACKOFF_MAX_SECONDS
BACKOFF_MAX_SECONDS = 8.0
SHUTDOWN_GRACE_SECONDS = 5.0  # deliveries still running at shutdown get this long, then are resent by the next process
MAX_RECENT = 500
_REDIS_PREFIX = shared_state.KEY_PREFIX + "budget-alert:"
_SENT = "sent"
_RETRYABLE = frozenset({408, 425, 429})  # and every 5xx; other 4xx (bad URL, revoked hook) will not improve

_RECORDED_SQL = (
    "SELECT count() AS n FROM otel.gateway_budget_alerts WHERE UserId = {user:String} AND Period = {period:String} "
    "AND PeriodStart = {start:Date} AND Threshold = {threshold:Float64}"
)
_RECENT_SQL = (
    "SELECT Timestamp AS created_at, AlertId AS alert_id, UserId AS user_id, UserEmail AS user_email, UserName AS user_name, "
    "Period AS period, PeriodStart AS period_start, Threshold AS threshold, LimitUsd AS limit_usd, SpentUsd AS spent_usd, "
    "ResetsAt AS resets_at, Delivery AS delivery, Attempts AS attempts FROM otel.gateway_budget_alerts "
    "WHERE {user:String} = '' OR UserId = {user:String} ORDER BY Timestamp DESC, Threshold DESC LIMIT {limit:UInt32}"
)


class Delivery(StrEnum):
    sent = "sent"  # the webhook answered 2xx
    failed = "failed"  # every attempt failed (logged); not retried later
    no_webhook = "no_webhook"  # BUDGET_ALERT_WEBHOOK_URL is unset: recorded for the page only


@dataclass(frozen=True)
class AlertKey:
    user_id: str
    period: Period
    period_start: date
    threshold: float

    @property
    def redis_key(self) -> str:  # the user id last: it may contain ':'
        return f"{_REDIS_PREFIX}{self.period}:{self.period_start.isoformat()}:{self.threshold!r}:{self.user_id}"

    def over(self, today: date) -> bool:
        """The period has ended: nothing can pass this threshold again."""
        return self.period_start < (today if self.period == "daily" else today.replace(day=1))


@dataclass(frozen=True)
class Alert:
    key: AlertKey
    alert_id: str
    email: str | None
    name: str | None
    limit_usd: Decimal
    spent_usd: Decimal
    resets_at: datetime
    detected_at: datetime

    def payload(self) -> dict[str, Any]:
        """What the webhook receives: no secret, no prompt text."""
        key = self.key
        return {
            "text": self.text(),
            "event": "budget_alert",
            "alert_id": self.alert_id,
            "user_id": key.user_id,
            "user_email": self.email,
            "user_name": self.name,
            "period": key.period,
            "threshold": key.threshold,
            "limit_usd": plain_decimal(self.limit_usd),
            "spent_usd": plain_decimal(self.spent_usd),
            "period_start": key.period_start.isoformat(),
            "resets_at": self.resets_at.isoformat(),
            "detected_at": self.detected_at.isoformat(),
        }

    def text(self) -> str:
        who = self.email or self.name or self.key.user_id
        if who != self.key.user_id:
            who = f"{who} (id {self.key.user_id})"
        percent = plain_decimal(Decimal(str(self.key.threshold)) * 100)
        return (
            f"user {_slack_escape(who)} passed {percent}% of their {self.key.period} budget: "
            f"{_usd(self.spent_usd)} of {_usd(self.limit_usd)}, resets {self.resets_at.strftime('%Y-%m-%d %H:%M')} UTC"
        )


def _slack_escape(text: str) -> str:
    """A user name such as '<!channel>' must not ping a Slack channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _usd(amount: Decimal) -> str:
    """$4.10, $5.00; small amounts keep their digits ($0.000025)."""
    cents = amount.quantize(Decimal("0.01"))
    if cents == amount or abs(amount) >= 1:
        return f"${cents:f}"
    return "$" + plain_decimal(amount.quantize(Decimal("0.000001")))


def period_start(status: BudgetStatus) -> date:
    last_day = (status.resets_at - timedelta(days=1)).date()
    return last_day if status.period == "daily" else last_day.replace(day=1)


class BudgetAlerts:
    """The one owner of budget alerts: detection, de-duplication, delivery, the record."""

    def __init__(
        self,
        thresholds: list[float],
        budgets: BudgetGuard,
        store: ClickHouseStore,
        webhook_url: str | None,
        timeout_seconds: float,
        attempts: int,
        redis: shared_state.Redis | None,
    ):
        self._thresholds = [(threshold, Decimal(str(threshold))) for threshold in sorted(thresholds)]
        self._budgets = budgets
        self._store = store
        self._url = webhook_url
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._redis = redis
        # every attempt may take the timeout, plus the backoffs between them, plus a margin
        self.lease_seconds = int(attempts * timeout_seconds + sum(self._backoff(n) for n in range(1, attempts)) + 30)
        self._client: httpx.AsyncClient | None = None
        self._done: set[AlertKey] = set()  # handled here, or found handled (Redis, ClickHouse)
        self._active: set[AlertKey] = set()  # being handled by a task of this process
        self._checking: set[str] = set()  # users whose spend a task is looking at
        self._recheck: set[str] = set()  # ... and who spent again meanwhile
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done
        self._pruned = datetime.now(UTC).date()

    @classmethod
    def build(
        cls, settings: Settings, access: AccessPolicy, budgets: BudgetGuard, store: ClickHouseStore, redis: shared_state.Redis | None
    ) -> "BudgetAlerts":
        """`redis`: the replicas' shared client (REDIS_URL), or None; its owner closes it."""
        url = settings.budget_alert_webhook_url
        return cls(
            access.policy.budgets.alerts,
            budgets,
            store,
            url.get_secret_value() if url is not None and url.get_secret_value() else None,
            settings.budget_alert_timeout_seconds,
            settings.budget_alert_attempts,
            redis,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._thresholds)

    # --- detection -------------------------------------------------------------------------

    def passed(self, status: BudgetStatus) -> list[float]:
        """The thresholds of the policy this period's spend has reached, lowest first."""
        if status.limit_usd <= 0:
            return []  # a zero budget refuses everything: there is nothing to warn about
        return [threshold for threshold, exact in self._thresholds if status.spent_usd >= exact * status.limit_usd]

    def warning(self, statuses: list[BudgetStatus]) -> str | None:
        """`x-budget-warning`: the highest threshold passed in any period, e.g. 'daily=0.8'."""
        best: tuple[float, BudgetStatus] | None = None
        for status in statuses:
            passed = self.passed(status)
            if passed and (best is None or passed[-1] > best[0]):
                best = (passed[-1], status)
        return None if best is None else f"{best[1].period}={best[0]!r}"

    def admitted(self, principal: Principal, statuses: list[BudgetStatus], headers: dict[str, str]) -> None:
        """At admission, with the periods admission read: the warning header, and alerts for spend
        this process did not see happen (image jobs, other replicas, a delivery a dead process left)."""
        if not self.enabled or principal.user_id is None:
            return
        value = self.warning(statuses)
        if value is not None:
            headers[WARNING_HEADER] = value
        self.observe(principal, statuses)

    def spent(self, principal: Principal) -> None:
        """A paid call was charged (sync: record_call). Looks at the user's spend in a task;
        calls finishing while one looks are covered by one more look, not one task each."""
        user_id = principal.user_id
        if not self.enabled or user_id is None:
            return
        if user_id in self._checking:
            self._recheck.add(user_id)
            return
        self._checking.add(user_id)
        self._spawn(self._look(principal, user_id))

    async def _look(self, principal: Principal, user_id: str) -> None:
        try:
            while True:
                self._recheck.discard(user_id)
                self.observe(principal, await self._budgets.periods(principal))
                if user_id not in self._recheck:
                    return
        except Exception:
            log.exception("budget alert check failed for user %s", user_id)
        finally:
            self._checking.discard(user_id)

    def observe(self, principal: Principal, statuses: list[BudgetStatus]) -> None:
        """Starts one alert per threshold passed that this process has not handled yet."""
        if principal.user_id is None:
            return
        now = datetime.now(UTC)
        self._prune(now.date())
        for status in statuses:
            start = period_start(status)
            for threshold in self.passed(status):
                key = AlertKey(principal.user_id, status.period, start, threshold)
                if key in self._done or key in self._active:
                    continue
                self._active.add(key)  # before any await: one task per key in this process
                alert = Alert(
                    key, uuid.uuid4().hex, principal.email, principal.name, status.limit_usd, status.spent_usd,
                    status.resets_at, now,
                )  # fmt: skip
                self._spawn(self._handle(alert))

    def _prune(self, today: date) -> None:
        if today != self._pruned:
            self._pruned = today
            self._done = {key for key in self._done if not key.over(today)}

    # --- one alert -------------------------------------------------------------------------

    async def _handle(self, alert: Alert) -> None:
        key = alert.key
        try:
            if not await self._claim(key) or await self._recorded(key):
                return
            delivery, attempts = await self._deliver(alert)
            await self._record(alert, delivery, attempts)
            await self._mark_sent(key, alert.resets_at)
            self._done.add(key)
            log.info("budget alert: user %s passed %s of their %s budget (%s)", key.user_id, key.threshold, key.period, delivery)
        except Exception:
            log.exception("budget alert for user %s failed", key.user_id)
        finally:
            self._active.discard(key)

    async def _claim(self, key: AlertKey) -> bool:
        """True: this process sends. False: another replica holds the alert (sent, or a live lease)."""
        if self._redis is None:
            return True
        try:
            if await self._redis.set(key.redis_key, f"lease:{uuid.uuid4().hex}", nx=True, ex=self.lease_seconds):
                return True
            holder = await self._redis.get(key.redis_key)
        except (RedisError, OSError) as exc:
            # at-least-once: without Redis to ask, ClickHouse's record still stops a resend after the fact
            log.warning("budget alert claim: Redis unavailable (%s); relying on the ClickHouse record", type(exc).__name__)
            return True
        if holder == _SENT:
            self._done.add(key)
        # a lease: its holder sends; if it died, the lease expires and a later look sends
        return False

    async def _recorded(self, key: AlertKey) -> bool:
        params = {"user": key.user_id, "period": key.period, "start": key.period_start, "threshold": key.threshold}
        try:
            rows = await self._store.run(lambda: self._store.query(_RECORDED_SQL, params))
        except StoreError as exc:
            log.warning("budget alert record unavailable (%s); sending without the check", exc)
            return False
        if rows and int(rows[0]["n"]) > 0:
            self._done.add(key)
            await self._mark_sent(key, None)
            return True
        return False

    async def _mark_sent(self, key: AlertKey, resets_at: datetime | None) -> None:
        if self._redis is None:
            return
        # kept past the end of the period: no replica sends this alert again while it could pass
        ending = resets_at or datetime.now(UTC) + timedelta(days=32)
        ttl = max(60, int((ending - datetime.now(UTC)).total_seconds()) + 86400)
        try:
            await self._redis.set(key.redis_key, _SENT, ex=ttl)
        except (RedisError, OSError) as exc:
            log.warning("budget alert: cannot mark sent in Redis (%s); the ClickHouse record still stops a resend", type(exc).__name__)

    @staticmethod
    def _backoff(attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        return float(min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2 ** (attempt - 1)))

    async def _deliver(self, alert: Alert) -> tuple[Delivery, int]:
        if self._url is None:
            return Delivery.no_webhook, 0
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        body = alert.payload()
        for attempt in range(1, self._attempts + 1):
            wait = self._backoff(attempt)
            try:
                response = await self._client.post(self._url, json=body)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__  # never str(exc): it may name the URL, a secret
            else:
                if response.is_success:
                    return Delivery.sent, attempt
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in _RETRYABLE:
                    log.warning("budget alert %s refused by the webhook (%s); not retried", alert.alert_id, problem)
                    return Delivery.failed, attempt
                retry_after = response.headers.get("retry-after", "")
                if retry_after.isdigit():
                    wait = min(BACKOFF_MAX_SECONDS, max(wait, float(retry_after)))
            if attempt == self._attempts:
                log.warning("budget alert %s undelivered after %d attempts (last: %s)", alert.alert_id, attempt, problem)
                break
            log.info("budget alert %s: attempt %d/%d failed (%s); retrying in %.1f s", alert.alert_id, attempt, self._attempts, problem, wait)
            await asyncio.sleep(wait)
        return Delivery.failed, self._attempts

    async def _record(self, alert: Alert, delivery: Delivery, attempts: int) -> None:
        key = alert.key
        row = (
            alert.detected_at, alert.alert_id, key.user_id, alert.email or "", alert.name or "", key.period, key.period_start,
            key.threshold, alert.limit_usd, alert.spent_usd, alert.resets_at, delivery.value, attempts,
        )  # fmt: skip
        try:
            await self._store.run(lambda: self._store.insert_columns(ALERTS_TABLE, COLUMNS, [[value] for value in row]))
        except StoreError as exc:
            log.warning("budget alert %s not recorded in ClickHouse (%s)", alert.alert_id, exc)

    # --- reading and lifecycle -------------------------------------------------------------

    def recent(self, limit: int, user: str | None = None) -> list[dict[str, Any]]:
        """The latest recorded alerts, newest first (blocking: run it through the store)."""
        return self._store.query(_RECENT_SQL, {"user": user or "", "limit": max(1, min(limit, MAX_RECENT))})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self._tasks and time.monotonic() < deadline:  # a look may start an alert: wait again
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        pending = list(self._tasks)
        for task in pending:
            task.cancel()  # unrecorded: the next process sends these (at-least-once)
        await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
