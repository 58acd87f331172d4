"""Image jobs: states, the job a replica runs, and the store that shares them.

The replica that runs a job holds its `Job` and reports every change to its `JobStore`,
which enforces the per-user limit, keeps who owns the job and announces each change as an
event; a listener replays a job's events from the start and then waits for more, so any
number of listeners see the same events in the same order, however late they join.
Two stores: in this process (media/local_jobs.py, one BFF process) and in Redis
(media/redis_jobs.py, REDIS_URL: every replica sees every job).
"""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from bff.errors import ApiError, not_found, rate_limited
from bff.identity.principal import Principal, Role
from bff.media.storage import StoredJob, new_job_id


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.timed_out})
EventKind = Literal["status", "progress", "end"]


class JobError(BaseModel):
    status: int
    code: str
    message: str

    @classmethod
    def of(cls, error: ApiError) -> "JobError":
        return cls(status=error.status, code=error.code, message=error.message)

    def api_error(self) -> ApiError:
        kinds = {400: "invalid_request_error", 500: "internal_error", 503: "service_unavailable", 504: "timeout_error"}
        kind = kinds.get(self.status, "upstream_error")
        return ApiError(self.status, self.message, kind, self.code)


class Progress(BaseModel):
    value: int
    max: int


class JobState(BaseModel):
    """A job at one moment; image URLs are added by the routes."""

    job_id: str
    workflow: str
    status: JobStatus
    progress: Progress
    error: JobError | None
    images: int
    cost_usd: float = Field(default=0.0, description="what the finished images cost (counted in usage and budget)")
    created_at: datetime
    finished_at: datetime | None


class JobEvent(BaseModel):
    seq: int
    kind: EventKind
    state: JobState


@dataclass
class Job:
    id: str
    owner: str
    workflow: str
    provider: str
    progress: Progress
    status: JobStatus = JobStatus.queued
    error: JobError | None = None
    images: int = 0
    cost_usd: Decimal = Decimal(0)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    deadline: datetime | None = None  # set by the Redis store: past it, any replica gives the job up
    # kept by the in-process store (media/local_jobs.py); the Redis store keeps its events in Redis
    events: list[JobEvent] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def state(self) -> JobState:
        return JobState(
            job_id=self.id,
            workflow=self.workflow,
            status=self.status,
            progress=self.progress.model_copy(),
            error=self.error,
            images=self.images,
            cost_usd=float(self.cost_usd),
            created_at=self.created_at,
            finished_at=self.finished_at,
        )

    def stored(self) -> StoredJob:
        assert self.finished_at is not None
        return StoredJob(
            job_id=self.id,
            owner=self.owner,
            workflow=self.workflow,
            provider=self.provider,
            images=self.images,
            progress_max=self.progress.max,
            created_at=self.created_at,
            finished_at=self.finished_at,
        )

    @classmethod
    def restored(cls, stored: StoredJob) -> "Job":
        job = cls(
            id=stored.job_id,
            owner=stored.owner,
            workflow=stored.workflow,
            provider=stored.provider,
            progress=Progress(value=stored.progress_max, max=stored.progress_max),
            status=JobStatus.succeeded,
            images=stored.images,
            created_at=stored.created_at,
            finished_at=stored.finished_at,
        )
        job.events = [JobEvent(seq=0, kind="end", state=job.state())]
        job.done.set()
        return job


def too_many_jobs(active: int, max_per_user: int) -> ApiError:
    return rate_limited(
        f"you already have {active} image jobs running (at most {max_per_user}); wait for one to finish",
        code="too_many_image_jobs",
    )


def job_not_found() -> ApiError:
    return not_found("no such image job", "job_not_found")


def may_see(principal: Principal, owner: str) -> bool:
    """A user sees their own jobs, an admin every job."""
    return principal.role is Role.admin or owner == principal.user_id


class JobStore(ABC):
    """The state machine of a job (here) and where its state and events are kept (subclasses)."""

    def __init__(self, max_per_user: int):
        self.max_per_user = max_per_user

    async def open(self, owner: str, workflow: str, provider: str, total_steps: int, timeout_seconds: float) -> Job:
        """A new queued job, unless the owner already has the most unfinished jobs allowed (429).

        `timeout_seconds` bounds the run; a shared store derives the job's deadline from it.
        """
        job = Job(id=new_job_id(), owner=owner, workflow=workflow, provider=provider, progress=Progress(value=0, max=total_steps))
        await self._admit(job, timeout_seconds)
        return job

    async def running(self, job: Job) -> None:
        if job.status is JobStatus.queued:
            job.status = JobStatus.running
            await self._publish(job, ("status",))

    async def progress(self, job: Job, value: int, maximum: int) -> None:
        if job.finished or (job.progress.value, job.progress.max) == (value, maximum):
            return
        await self.running(job)
        job.progress = Progress(value=value, max=maximum)
        await self._publish(job, ("progress",))

    async def finish(self, job: Job, status: JobStatus, images: int = 0, error: JobError | None = None) -> None:
        if job.finished:
            return
        job.status, job.images, job.error = status, images, error
        job.finished_at = job.finished_at or datetime.now(UTC)
        if status is JobStatus.succeeded:
            job.progress = Progress(value=job.progress.max, max=job.progress.max)
        try:
            await self._publish(job, ("status", "end"))  # also frees the owner's slot
        finally:
            job.done.set()  # the synchronous route waits for this, whatever the store did

    @abstractmethod
    async def _admit(self, job: Job, timeout_seconds: float) -> None:
        """Counts the job against its owner's limit (429 beyond it) and records it queued."""

    @abstractmethod
    async def _publish(self, job: Job, kinds: tuple[EventKind, ...]) -> None:
        """Records the job's current state and appends one event per kind; a finished job frees its slot."""

    @abstractmethod
    async def discard(self, job: Job) -> None:
        """A job that never started (its submission failed) leaves no trace and holds no slot."""

    @abstractmethod
    async def visible(self, job_id: str, principal: Principal) -> JobState:
        """The job's state, if the caller owns it or is an admin; 404 otherwise, so ids reveal nothing."""

    @abstractmethod
    def listen(self, job_id: str, state: JobState) -> AsyncIterator[JobEvent]:
        """Every event of a job `visible` just returned, in order from the first, ending with `end`."""

    def restore(self, stored: StoredJob) -> None:
        """A finished job found on disk at start-up (a store that keeps nothing across restarts needs it)."""
        return None

    def forget(self, job_ids: list[str]) -> None:
        """Finished jobs whose images the sweep removed."""
        return None

    def forget_finished_before(self, moment: datetime) -> None:
        return None

    async def aclose(self) -> None:
        return None


class JobSink:
    """What a backend reports while following one job."""

    def __init__(self, registry: JobStore, job: Job):
        self._registry = registry
        self._job = job

    async def running(self) -> None:
        await self._registry.running(self._job)

    async def progress(self, value: int, maximum: int) -> None:
        await self._registry.progress(self._job, value, maximum)
