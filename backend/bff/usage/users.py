"""People by name: the latest name, email and role the gateway saw for each user, in
otel.gateway_users (config/clickhouse/007_gateway_feedback.sql), never on the spans.

`UserDirectory.seen` runs at admission on every request: it is synchronous and cheap. It
compares the caller with what this process last recorded for them (a bounded LRU) and only
a new user, or a changed name, email or role, queues a row. A background task inserts the
queued rows in batches through the store's worker thread, so a request never waits on
ClickHouse and never fails because of it: rows that cannot be written stay queued (bounded)
and are retried with a backoff. ReplacingMergeTree(SeenAt) keeps one row per user (read FINAL),
so a row written twice (two replicas, a restart) is harmless.

Admins read the table through `names` (the user ids on one page of usage) and `search`.
Names and emails are never logged.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bff.clickhouse import ClickHouseStore, StoreError
from bff.identity.principal import Principal

log = logging.getLogger("bff.usage.users")

USERS_TABLE = "otel.gateway_users"
COLUMNS = ("UserId", "Name", "Email", "Role", "SeenAt")
CAPACITY = 10_000  # users remembered per process (what was last written); also bounds the queue
BATCH_DELAY_SECONDS = 0.2  # sightings within this window go in one insert
RETRY_SECONDS = (1.0, 2.0, 5.0, 15.0, 30.0)  # backoff after failed inserts (then the last, repeated)
SHUTDOWN_GRACE_SECONDS = 3.0
MAX_LOOKUP = 1000  # user ids per lookup (a page of usage holds at most queries.MAX_ROWS)
MAX_SEARCH = 200

_NAMES_SQL = (
    f"SELECT UserId AS user_id, Name AS name, Email AS email FROM {USERS_TABLE} FINAL "
    "WHERE has({ids:Array(String)}, UserId)"
)
_SEARCH_SQL = (
    f"SELECT UserId AS user_id, Name AS name, Email AS email, Role AS role, SeenAt AS seen_at FROM {USERS_TABLE} FINAL "
    "WHERE {query:String} = '' OR positionCaseInsensitiveUTF8(UserId, {query:String}) > 0 "
    "OR positionCaseInsensitiveUTF8(Name, {query:String}) > 0 OR positionCaseInsensitiveUTF8(Email, {query:String}) > 0 "
    "ORDER BY SeenAt DESC, UserId LIMIT {limit:UInt32}"
)


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    role: str


@dataclass(frozen=True)
class Named:
    """What an admin sees next to a user id."""

    name: str | None
    email: str | None


class UserDirectory:
    """The one owner of otel.gateway_users: records who was seen, and answers who an id is."""

    def __init__(self, store: ClickHouseStore, capacity: int = CAPACITY, batch_delay_seconds: float = BATCH_DELAY_SECONDS):
        self._store = store
        self._capacity = capacity
        self._delay = batch_delay_seconds
        self._known: OrderedDict[str, Person] = OrderedDict()  # last queued or written per user, LRU
        self._pending: OrderedDict[str, tuple[Person, datetime]] = OrderedDict()  # not yet written
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._closing: asyncio.Event | None = None  # set at shutdown: the writer stops waiting

    # --- recording (request path: sync, no I/O) ---------------------------------------------

    def seen(self, principal: Principal) -> None:
        """The caller was admitted: queue a row if this process has not recorded them as they are."""
        user_id = principal.user_id
        if user_id is None or (principal.name is None and principal.email is None):
            return  # a bare service key, or an identity without a name (nothing to show)
        before = self._known.get(user_id)
        # a source that omits a field (plain forwarded headers) does not erase what another named
        person = Person(
            name=principal.name if principal.name is not None else (before.name if before else ""),
            email=principal.email if principal.email is not None else (before.email if before else ""),
            role=principal.role.value if principal.role is not None else (before.role if before else ""),
        )
        if before == person:
            self._known.move_to_end(user_id)
            return
        self._known[user_id] = person
        self._known.move_to_end(user_id)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        self._pending[user_id] = (person, datetime.now(UTC))
        self._pending.move_to_end(user_id)
        while len(self._pending) > self._capacity:  # ClickHouse down for long: the oldest sightings go
            dropped, _ = self._pending.popitem(last=False)
            self._known.pop(dropped, None)  # ... and are queued again when seen again
        self._wake()

    def _wake(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a blocking caller): the next sighting on the loop starts the writer
        self._task = loop.create_task(self._writer())

    def _wait_seconds(self) -> float:
        if self._failures == 0:
            return self._delay
        return RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS)) - 1]

    async def _writer(self) -> None:
        if self._closing is None:
            self._closing = asyncio.Event()
        while self._pending:
            closing = self._closing.is_set()
            if not closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._wait_seconds())
            if await self._flush():
                self._failures = 0
            else:
                self._failures += 1
                if closing:
                    return  # at shutdown, one last try only

    async def _flush(self) -> bool:
        """Writes what is queued; False when ClickHouse refused or was unreachable (kept queued)."""
        batch = list(self._pending.items())
        if not batch:
            return True
        self._pending.clear()
        columns: list[list[Any]] = [
            [user_id for user_id, _ in batch],
            [person.name for _, (person, _) in batch],
            [person.email for _, (person, _) in batch],
            [person.role for _, (person, _) in batch],
            [at for _, (_, at) in batch],
        ]
        try:
            await self._store.run(lambda: self._store.insert_columns(USERS_TABLE, COLUMNS, columns))
        except StoreError as exc:
            for user_id, entry in batch:
                if user_id not in self._pending:  # a newer sighting queued meanwhile wins
                    self._pending[user_id] = entry
                    self._pending.move_to_end(user_id, last=False)
            log.warning("users: %d row(s) not written to ClickHouse (%s); retrying later", len(batch), exc)
            return False
        return True

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def aclose(self) -> None:
        """At shutdown: the writer writes what is queued now, for a few seconds at most."""
        if self._closing is None:
            self._closing = asyncio.Event()
        self._closing.set()
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._writer())
        task = self._task
        if task is None:
            return
        await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_SECONDS)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            log.warning("users: %d row(s) not written at shutdown", len(self._pending))

    # --- reading (blocking: run through the store) ------------------------------------------

    def names(self, user_ids: Iterable[str]) -> dict[str, Named]:
        """Name and email of these users, as last recorded; unknown ids are absent."""
        ids = sorted({user_id for user_id in user_ids if user_id})[:MAX_LOOKUP]
        if not ids:
            return {}
        rows = self._store.query(_NAMES_SQL, {"ids": ids})
        return {row["user_id"]: Named(row["name"] or None, row["email"] or None) for row in rows}

    def names_or_none(self, user_ids: Iterable[str]) -> dict[str, Named]:
        """`names`, or nothing when the table cannot be read: the usage answer goes out without names."""
        try:
            return self.names(user_ids)
        except StoreError as exc:
            log.warning("users: names unavailable (%s)", exc)
            return {}

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        """Users whose id, name or email contains `query` (case-insensitive), most recently seen first."""
        return self._store.query(_SEARCH_SQL, {"query": query, "limit": max(1, min(limit, MAX_SEARCH))})
