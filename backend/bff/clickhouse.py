"""The ClickHouse store: one clickhouse-connect client for the embedded engine (chdb://)
or a server (http(s)://), the schema from config/clickhouse/, and thread-safe access.

Calls are blocking; async code goes through `run` (a worker thread) so the event
loop never waits on ClickHouse. The embedded engine takes one call at a time (calls
queue on a lock per data path); a server takes concurrent calls (the client has no
session, so its pooled HTTP connections run them side by side).

The embedded engine (the chdb package, ~0.5 GB) is imported only when a chdb:// store
connects: clickhouse-connect loads its chdb backend lazily, and nothing here imports it.
"""

import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

log = logging.getLogger("bff.clickhouse")

T = TypeVar("T")
_LOCKS: dict[str, threading.Lock] = {}  # one per store URL: an embedded engine is shared per process
_LOCKS_GUARD = threading.Lock()


def _statements(sql: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]


class StoreError(Exception):
    """Any failure of a store call."""


class StoreUnavailable(StoreError):
    """ClickHouse could not be reached (an outage: retry later)."""


class StoreQueryError(StoreError):
    """ClickHouse answered, and refused the statement (a bug or an unchecked input, not an outage)."""


class ClickHouseStore:
    def __init__(self, url: str, schema_dir: Path):
        self.url = url
        self._schema_dir = schema_dir
        self._client: Client | None = None
        self._connecting = threading.Lock()
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(url, threading.Lock())

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb:")

    def _connected(self) -> Client:
        """Connects and applies the schema on first use, so a store that is down at
        start-up does not stop the BFF: chat keeps working and this retries later."""
        client = self._client
        if client is not None:
            return client
        with self._connecting:
            if self._client is None:
                try:
                    # No session: a server then takes this client's calls concurrently.
                    if self.embedded:
                        client = clickhouse_connect.get_client(dsn=self.url)
                    else:
                        client = clickhouse_connect.get_client(dsn=self.url, autogenerate_session_id=False)
                    for path in sorted(self._schema_dir.glob("*.sql")):
                        for statement in _statements(path.read_text()):
                            client.command(statement)
                except Exception as exc:  # the driver raises many kinds; all mean "not usable now"
                    raise StoreUnavailable(type(exc).__name__) from exc
                self._client = client
            return self._client

    def call(self, action: Callable[[Client], T]) -> T:
        if not self.embedded:
            return self._call(action)
        with self._lock:
            return self._call(action)

    def _call(self, action: Callable[[Client], T]) -> T:
        try:
            return action(self._connected())
        except StoreUnavailable:
            raise
        except DatabaseError as exc:
            if not isinstance(exc, OperationalError):
                raise StoreQueryError(str(exc).split("\n")[0][:300]) from exc
            if not self.embedded:
                self._client = None  # reconnect next time
            raise StoreUnavailable(type(exc).__name__) from exc
        except Exception as exc:
            if not self.embedded:
                self._client = None  # reconnect next time
            raise StoreUnavailable(type(exc).__name__) from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.call(lambda client: list(client.query(sql, parameters=parameters or {}).named_results()))

    def insert_columns(self, table: str, column_names: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
        self.call(lambda client: client.insert(table, list(columns), column_names=list(column_names), column_oriented=True))

    async def run(self, action: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(action)

    async def problem(self) -> str | None:
        try:
            await self.run(lambda: self.query("SELECT 1"))
        except StoreError as exc:
            return f"unreachable ({exc})"
        return None

    def close(self) -> None:
        with self._lock, self._connecting:
            if self._client is not None and not self.embedded:
                self._client.close()
            self._client = None
