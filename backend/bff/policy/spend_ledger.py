"""Costs of finished requests that ClickHouse may not hold yet: the budgets' unsettled spend.

A budget is the user's spend in ClickHouse (a snapshot, cached a few seconds) plus what the
snapshot lacks. Which finished costs it lacks is told one of two ways:
- MemoryLedger, one process with its own span exporter: the exporter reports each batch it
  delivered; the snapshot reads the delivery sequence inside the store's lock, so it knows
  exactly which costs it contains;
- with OTLP export (no delivery report) or Redis (replicas: another replica's exporter
  delivered the span), each snapshot first asks ClickHouse which of the user's pending span
  ids are stored, then reads the sums: a cost counts until its row is in the snapshot.
  (A row stored between the two reads counts twice until the next snapshot, never zero times.)
RedisLedger keeps the costs in one hash per user, so every replica counts every replica's
costs the moment they are finished.
"""

import threading
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from pydantic import BaseModel

from bff.shared_state import KEY_PREFIX, Redis

# A finished cost the store never receives (the collector or the exporter's buffer lost it) stops counting after this.
UNSTORED_SECONDS = 3600.0
# Delivered costs of users who stop calling are forgotten after this; it exceeds any cache TTL.
FORGET_AFTER_SECONDS = 120.0
# How often the costs of users who stopped calling are looked at (a request looks only at its caller's).
SWEEP_SECONDS = 30.0


@dataclass
class SpendSnapshot:
    day: date
    daily: Decimal
    monthly: Decimal
    sequence: int  # deliveries the snapshot includes (MemoryLedger)
    taken: float  # monotonic
    stored: frozenset[str] = frozenset()  # pending span ids the store held before the sums were read


def _add(day: date, cost: Decimal, today: date, totals: tuple[Decimal, Decimal]) -> tuple[Decimal, Decimal]:
    daily, monthly = totals
    if day == today:
        daily += cost
    if (day.year, day.month) == (today.year, today.month):
        monthly += cost
    return daily, monthly


class SpendLedger(Protocol):
    async def add(self, user_id: str, span_id: str, day: date, cost: Decimal) -> None: ...

    def delivered(self, span_ids: list[str]) -> None: ...

    def sequence(self) -> int: ...

    async def pending(self, user_id: str) -> list[str]:
        """Span ids whose storage the next snapshot must ask ClickHouse about ([]: deliveries are reported)."""
        ...

    async def outstanding(self, user_id: str, snapshot: SpendSnapshot | None, today: date) -> tuple[Decimal, Decimal]:
        """(daily, monthly) cost the snapshot does not contain."""
        ...


@dataclass
class _Unsettled:
    day: date
    cost: Decimal
    finished: float  # monotonic
    delivered_in: int | None = None  # delivery sequence that brought it to ClickHouse


class MemoryLedger:
    def __init__(self, delivery_reports: bool):
        self._delivery_reports = delivery_reports
        self._lock = threading.Lock()  # the exporter thread reports deliveries
        self._sequence = 0
        # user -> span id -> cost: per user, so a request looks at its caller's costs only
        self._unsettled: dict[str, dict[str, _Unsettled]] = {}
        self._owners: dict[str, str] = {}  # span id -> user, for the exporter's delivery reports
        self._swept = time.monotonic()

    async def add(self, user_id: str, span_id: str, day: date, cost: Decimal) -> None:
        with self._lock:
            self._unsettled.setdefault(user_id, {})[span_id] = _Unsettled(day, cost, time.monotonic())
            self._owners[span_id] = user_id

    def delivered(self, span_ids: list[str]) -> None:
        with self._lock:
            self._sequence += 1
            for span_id in span_ids:
                entry = self._unsettled.get(self._owners.get(span_id, ""), {}).get(span_id)
                if entry is not None:
                    entry.delivered_in = self._sequence

    def sequence(self) -> int:
        with self._lock:
            return self._sequence

    async def pending(self, user_id: str) -> list[str]:
        if self._delivery_reports:
            return []
        with self._lock:
            return list(self._unsettled.get(user_id, {}))

    async def outstanding(self, user_id: str, snapshot: SpendSnapshot | None, today: date) -> tuple[Decimal, Decimal]:
        totals = (Decimal(0), Decimal(0))
        now = time.monotonic()
        with self._lock:
            for span_id, entry in list(self._unsettled.get(user_id, {}).items()):
                if self._settled(span_id, entry, snapshot, now):
                    self._forget(user_id, span_id)
                else:
                    totals = _add(entry.day, entry.cost, today, totals)
            if now - self._swept > SWEEP_SECONDS:
                self.sweep(now)
        return totals

    def sweep(self, now: float) -> None:
        """Forgets the costs of users who stopped calling, once no snapshot of theirs can need them."""
        self._swept = now
        for user_id, entries in list(self._unsettled.items()):
            for span_id, entry in list(entries.items()):
                delivered = entry.delivered_in is not None
                if (delivered and now - entry.finished > FORGET_AFTER_SECONDS) or now - entry.finished > UNSTORED_SECONDS:
                    self._forget(user_id, span_id)

    def users(self) -> dict[str, set[str]]:
        with self._lock:
            return {user: set(entries) for user, entries in self._unsettled.items()}

    def _forget(self, user_id: str, span_id: str) -> None:
        entries = self._unsettled[user_id]
        del entries[span_id]
        self._owners.pop(span_id, None)
        if not entries:
            del self._unsettled[user_id]

    def _settled(self, span_id: str, entry: _Unsettled, snapshot: SpendSnapshot | None, now: float) -> bool:
        if self._delivery_reports:
            return snapshot is not None and entry.delivered_in is not None and entry.delivered_in <= snapshot.sequence
        return (snapshot is not None and span_id in snapshot.stored) or now - entry.finished > UNSTORED_SECONDS


class _Entry(BaseModel):
    day: date
    cost: Decimal
    finished: float  # epoch seconds
    seen_stored: float | None = None  # epoch seconds a snapshot (of any replica) first saw it stored


class RedisLedger:
    """One hash per user: span id -> entry. An entry seen stored is kept `forget_after`
    longer than any replica's snapshot cache, so a replica with an older snapshot still counts it."""

    def __init__(self, redis: Redis, cache_seconds: float):
        self._redis = redis
        self._forget_after = cache_seconds + 5.0

    @staticmethod
    def _key(user_id: str) -> str:
        return f"{KEY_PREFIX}spend:{user_id}"

    async def add(self, user_id: str, span_id: str, day: date, cost: Decimal) -> None:
        entry = _Entry(day=day, cost=cost, finished=time.time())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(user_id), span_id, entry.model_dump_json())
            pipe.expire(self._key(user_id), int(UNSTORED_SECONDS) + 60)
            await pipe.execute()

    def delivered(self, span_ids: list[str]) -> None:
        return None  # settled by asking ClickHouse: the span may come from any replica's exporter

    def sequence(self) -> int:
        return 0

    async def pending(self, user_id: str) -> list[str]:
        return [str(span_id) for span_id in await self._redis.hkeys(self._key(user_id))]

    async def outstanding(self, user_id: str, snapshot: SpendSnapshot | None, today: date) -> tuple[Decimal, Decimal]:
        raw = {str(span_id): str(value) for span_id, value in (await self._redis.hgetall(self._key(user_id))).items()}
        totals = (Decimal(0), Decimal(0))
        now = time.time()
        seen: dict[str, str] = {}
        gone: list[str] = []
        for span_id, value in raw.items():
            entry = _Entry.model_validate_json(value)
            in_snapshot = snapshot is not None and span_id in snapshot.stored
            if in_snapshot and entry.seen_stored is None:
                seen[span_id] = entry.model_copy(update={"seen_stored": now}).model_dump_json()
            if (entry.seen_stored is not None and now - entry.seen_stored > self._forget_after) or (
                now - entry.finished > UNSTORED_SECONDS
            ):
                gone.append(span_id)
            elif not in_snapshot:
                totals = _add(entry.day, entry.cost, today, totals)
        if seen or gone:
            async with self._redis.pipeline(transaction=False) as pipe:
                for span_id, value in seen.items():
                    pipe.hset(self._key(user_id), span_id, value)
                if gone:
                    pipe.hdel(self._key(user_id), *gone)
                await pipe.execute()
        return totals
