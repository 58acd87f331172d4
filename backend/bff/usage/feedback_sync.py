"""Open-WebUI's ratings, pulled into otel.gateway_feedback on a schedule.

Why pull: Open-WebUI 0.12.4's feedback events are either unsigned webhooks (skipped for private
addresses, never retried) or an in-process Function to install and keep; its evaluations API, read
with the admin credential (OPEN_WEBUI_ADMIN_TOKEN), is the source of truth and needs nothing
installed in Open-WebUI. A missed poll is caught up by the next one.

Each poll (`poll`):
- pages `GET /api/v1/evaluations/feedbacks/list?order_by=updated_at&direction=desc&page=N`
  (30 per page, newest update first) until a page reaches rows older than the high-water mark
  (the newest `updated_at` already stored, minus an overlap: Open-WebUI's times are in seconds),
  at most `feedback_sync_max_pages` pages. The first poll after start has no mark: a full resync;
- writes rows it has not written in this form yet (a rating changed in Open-WebUI has a newer
  `updated_at` and replaces the old row: ReplacingMergeTree(UpdatedAt, Deleted), one row per
  feedback id; writing the same row twice is harmless);
- every `feedback_sync_deletions_every` polls compares the ids stored in ClickHouse with
  `GET /api/v1/evaluations/feedbacks/all/ids`: ids gone from Open-WebUI get a tombstone
  (Deleted = 1), and ids the pages missed (a row that moved between pages while paging) are
  fetched one by one (`GET /api/v1/evaluations/feedback/{id}`, a bounded few per pass).

Only what the join and the results need is kept: ids, rating, the 1-10 detail rating, reason,
tags and whether there was a comment; never the comment text nor the chat snapshot. Open-WebUI's
answers are validated (`OwFeedback`); JSON is required (an unknown path answers 200 text/html).

Failures (Open-WebUI or ClickHouse down, token refused) are logged with the status or the error
type, never the token, and the poll is retried after the interval; the high-water mark moves only
after a successful write. The task runs beside the requests and never blocks them.
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bff.clickhouse import ClickHouseStore, StoreError
from bff.settings import Settings
from bff.usage.feedback_queries import FEEDBACK_TABLE

log = logging.getLogger("bff.usage.feedback_sync")

LIST_PATH = "/api/v1/evaluations/feedbacks/list"
IDS_PATH = "/api/v1/evaluations/feedbacks/all/ids"
ONE_PATH = "/api/v1/evaluations/feedback/{id}"
PAGE_SIZE = 30  # Open-WebUI 0.12.4's PAGE_ITEM_COUNT
OVERLAP_SECONDS = 2  # updated_at has one-second resolution: re-read the last seconds
MISSING_PER_PASS = 50  # rows fetched one by one per deletion check
MAX_ID = 256
MAX_TEXT = 64
MAX_TAGS = 20
COLUMNS = (
    "FeedbackId", "UserId", "ChatId", "MessageId", "ModelId", "Rating", "DetailRating",
    "Reason", "Tags", "HasComment", "CreatedAt", "UpdatedAt", "Deleted",
)  # fmt: skip
_STORED_IDS_SQL = (
    f"SELECT FeedbackId AS id, toUnixTimestamp(UpdatedAt) AS updated_at FROM {FEEDBACK_TABLE} FINAL WHERE Deleted = 0"
)
_HIGH_WATER_SQL = (
    f"SELECT toUnixTimestamp(max(UpdatedAt)) AS updated_at, count() AS rows FROM {FEEDBACK_TABLE} FINAL WHERE Deleted = 0"
)


def _short(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    """Open-WebUI keeps ratings as str | int (the UI sends integers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    return None


class OwFeedbackId(BaseModel):
    """An entry of /feedbacks/all/ids (FeedbackIdResponse)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    user_id: str
    created_at: int
    updated_at: int


class OwFeedback(BaseModel):
    """A feedback as /feedbacks/list (FeedbackUserResponse) or /feedback/{id} (FeedbackModel)
    answers it. `data` and `meta` are the browser's JSON: read leniently, bounded."""

    model_config = ConfigDict(extra="ignore")
    id: str
    user_id: str
    type: str | None = None
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    created_at: int
    updated_at: int

    @field_validator("id", "user_id")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if not value or len(value) > MAX_ID:
            raise ValueError("empty or too long")
        return value

    def row(self) -> tuple[Any, ...]:
        data, meta = self.data or {}, self.meta or {}
        rating = _int(data.get("rating"))
        details = data.get("details")
        detail = _int(details.get("rating")) if isinstance(details, dict) else None
        tags = data.get("tags")
        return (
            self.id,
            self.user_id,
            _short(meta.get("chat_id"), MAX_ID),
            _short(meta.get("message_id"), MAX_ID),
            _short(data.get("model_id"), MAX_ID),  # the browser's word: informational only
            rating if rating in (1, -1) else 0,
            detail if detail is not None and 1 <= detail <= 10 else None,
            _short(data.get("reason"), MAX_TEXT),
            [tag[:MAX_TEXT] for tag in tags if isinstance(tag, str)][:MAX_TAGS] if isinstance(tags, list) else [],
            bool(isinstance(data.get("comment"), str) and data["comment"].strip()),
            _moment(self.created_at),
            _moment(self.updated_at),
            0,
        )


class OwFeedbackPage(BaseModel):
    """/feedbacks/list (FeedbackListResponse); items are validated one by one."""

    model_config = ConfigDict(extra="ignore")
    items: list[dict[str, Any]]
    total: int


def _moment(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(max(0, min(epoch_seconds, 10_000_000_000)), UTC)


def _fingerprint(row: tuple[Any, ...]) -> str:
    return hashlib.blake2b(repr(row).encode(), digest_size=12).hexdigest()


class SyncError(Exception):
    """One poll failed (the message names no credential)."""


@dataclass
class SyncStatus:
    enabled: bool
    polls: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    rows_written: int = 0
    tombstones_written: int = 0


class FeedbackSync:
    """The one writer of otel.gateway_feedback (one per BFF process; replicas writing the same rows is harmless)."""

    def __init__(self, settings: Settings, store: ClickHouseStore, transport: httpx.AsyncBaseTransport | None = None):
        token = settings.open_webui_admin_token.get_secret_value() if settings.open_webui_admin_token else ""
        self._token = token
        self._interval = settings.feedback_sync_interval_seconds
        self._max_pages = settings.feedback_sync_max_pages
        self._deletions_every = settings.feedback_sync_deletions_every
        self._base = settings.open_webui_url.rstrip("/")
        self._timeout = settings.feedback_sync_timeout_seconds
        self._transport = transport
        self._store = store
        self._task: asyncio.Task[None] | None = None
        self._written: dict[str, str] = {}  # feedback id -> fingerprint of the row written by this process
        self._high_water: int | None = None  # None: the next poll is a full resync
        self._tried_missing: set[str] = set()
        self.status = SyncStatus(enabled=bool(token) and self._interval > 0)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._interval <= 0:
            log.info("feedback sync off (FEEDBACK_SYNC_INTERVAL_SECONDS=0)")
            return
        if not self._token:
            log.warning("feedback sync off: OPEN_WEBUI_ADMIN_TOKEN is not set, Open-WebUI ratings are not collected")
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="feedback-sync")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self._base,
            headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            while True:
                started = time.monotonic()
                try:
                    await self.poll(client)
                except asyncio.CancelledError:
                    raise
                except SyncError as exc:
                    self._failed(str(exc))
                except Exception as exc:  # never let the task die: retried after the interval
                    self._failed(f"unexpected {type(exc).__name__}")
                await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    def _failed(self, reason: str) -> None:
        if self.status.last_error != reason:
            log.warning("feedback sync failed (retried in %.0f s): %s", self._interval, reason)
        self.status.last_error = reason

    # --- one poll -----------------------------------------------------------------------------

    async def poll(self, client: httpx.AsyncClient) -> None:
        self.status.polls += 1
        if self._high_water is None:  # full resync: from the newest row back to the oldest
            await self._pull(client, floor=None)
        else:
            await self._pull(client, floor=self._high_water - OVERLAP_SECONDS)
        if self.status.polls % self._deletions_every == 1 or self._deletions_every == 1:
            await self._reconcile(client)
        self.status.last_success_at = datetime.now(UTC)
        if self.status.last_error is not None:
            log.info("feedback sync recovered")
        self.status.last_error = None

    async def _get(self, client: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            answer = await client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise SyncError(f"Open-WebUI unreachable ({type(exc).__name__})") from None
        if answer.status_code in (401, 403):
            raise SyncError(
                f"Open-WebUI refused the admin token (HTTP {answer.status_code}): OPEN_WEBUI_ADMIN_TOKEN must be an admin's"
            )
        if answer.status_code != 200:
            raise SyncError(f"Open-WebUI answered HTTP {answer.status_code} on {path}")
        if not answer.headers.get("content-type", "").startswith("application/json"):
            raise SyncError(
                f"Open-WebUI answered {answer.headers.get('content-type', 'no content type')} on {path} (not 0.12.4's API?)"
            )
        try:
            return answer.json()
        except ValueError:
            raise SyncError(f"Open-WebUI answered invalid JSON on {path}") from None

    async def _pull(self, client: httpx.AsyncClient, floor: int | None) -> None:
        rows: list[tuple[Any, ...]] = []
        newest = self._high_water
        for page in range(1, self._max_pages + 1):
            try:
                answer = OwFeedbackPage.model_validate(
                    await self._get(client, LIST_PATH, {"order_by": "updated_at", "direction": "desc", "page": page})
                )
            except ValidationError:
                raise SyncError("Open-WebUI's feedback list has an unexpected shape") from None
            items = _valid(answer.items)
            rows.extend(item.row() for item in items if floor is None or item.updated_at >= floor)
            if items:
                newest = max(newest or 0, max(item.updated_at for item in items))
            if (
                len(answer.items) < PAGE_SIZE
                or page * PAGE_SIZE >= answer.total
                or (floor is not None and any(item.updated_at < floor for item in items))
            ):
                break
        else:
            if floor is None:
                log.warning(
                    "feedback sync: the first sync stopped at %d pages; older ratings are fetched as the ids check finds them",
                    self._max_pages,
                )
        await self._write(rows)
        if newest is None:  # nothing in Open-WebUI yet: what ClickHouse holds
            newest = await self._stored_high_water()
        self._high_water = newest

    async def _stored_high_water(self) -> int:
        try:
            rows = await self._store.run(lambda: self._store.query(_HIGH_WATER_SQL))
        except StoreError as exc:
            raise SyncError(f"ClickHouse unavailable ({type(exc).__name__})") from None
        return int(rows[0]["updated_at"]) if rows and rows[0]["rows"] else 0

    async def _write(self, rows: Iterable[tuple[Any, ...]], tombstones: bool = False) -> None:
        fresh: dict[str, tuple[tuple[Any, ...], str]] = {}
        for row in rows:
            mark = _fingerprint(row)
            if self._written.get(row[0]) != mark:
                fresh[row[0]] = (row, mark)
        if not fresh:
            return
        columns = list(zip(*(row for row, _ in fresh.values()), strict=True))
        try:
            await self._store.run(lambda: self._store.insert_columns(FEEDBACK_TABLE, COLUMNS, columns))
        except StoreError as exc:
            raise SyncError(f"ClickHouse unavailable ({type(exc).__name__})") from None
        for feedback_id, (_, mark) in fresh.items():
            self._written[feedback_id] = mark
        if tombstones:
            self.status.tombstones_written += len(fresh)
        else:
            self.status.rows_written += len(fresh)

    async def _reconcile(self, client: httpx.AsyncClient) -> None:
        """Deletions and rows the pages missed: ClickHouse's live ids against Open-WebUI's.
        ClickHouse is read first, so a row another replica writes meanwhile is never taken for deleted."""
        try:
            stored_rows = await self._store.run(lambda: self._store.query(_STORED_IDS_SQL))
        except StoreError as exc:
            raise SyncError(f"ClickHouse unavailable ({type(exc).__name__})") from None
        stored = {str(row["id"]): int(row["updated_at"]) for row in stored_rows}
        answer = await self._get(client, IDS_PATH)
        if not isinstance(answer, list):
            raise SyncError("Open-WebUI's feedback ids have an unexpected shape")
        remote: dict[str, int] = {}
        for entry in answer:
            with contextlib.suppress(ValidationError):
                parsed = OwFeedbackId.model_validate(entry)
                remote[parsed.id] = parsed.updated_at
        now = datetime.now(UTC)
        gone: list[tuple[Any, ...]] = [
            (feedback_id, "", "", "", "", 0, None, "", [], False, _moment(updated), max(now, _moment(updated + 1)), 1)
            for feedback_id, updated in stored.items()
            if feedback_id not in remote
        ]
        if gone:
            await self._write(gone, tombstones=True)
            for feedback_id, *_ in gone:
                self._written.pop(feedback_id, None)
        missing = [
            feedback_id
            for feedback_id, updated in remote.items()
            if stored.get(feedback_id, -1) < updated and feedback_id not in self._tried_missing
        ]
        found: list[tuple[Any, ...]] = []
        for feedback_id in missing[:MISSING_PER_PASS]:
            self._tried_missing.add(feedback_id)
            with contextlib.suppress(ValidationError, SyncError):
                found.append(OwFeedback.model_validate(await self._get(client, ONE_PATH.format(id=feedback_id))).row())
        if len(self._tried_missing) > 100_000:
            self._tried_missing.clear()
        await self._write(found)


def _valid(items: list[dict[str, Any]]) -> list[OwFeedback]:
    valid: list[OwFeedback] = []
    skipped = 0
    for item in items:
        try:
            valid.append(OwFeedback.model_validate(item))
        except ValidationError:
            skipped += 1
    if skipped:
        log.warning("feedback sync skipped %d feedback entries of an unexpected shape", skipped)
    return valid
