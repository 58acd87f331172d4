"""Image jobs: states, per-user limits, visibility, and progress fan-out to listeners.

Every change of a job is appended to its event list (bounded by the job's steps) and
announced; a listener replays the list from the start and then waits for more, so any
number of listeners see the same events in the same order, however late they join.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from bff.errors import ApiError, not_found, rate_limited
from bff.identity.principal import Principal, Role
from bff.media.storage import JOB_ID, StoredJob, new_job_id


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


class JobRegistry:
    def __init__(self, max_per_user: int):
        self.max_per_user = max_per_user
        self._jobs: dict[str, Job] = {}
        self._active: dict[str, set[str]] = {}  # owner -> ids of unfinished jobs

    def open(self, owner: str, workflow: str, provider: str, total_steps: int) -> Job:
        """A new queued job, unless the owner already has the most unfinished jobs allowed."""
        active = self._active.setdefault(owner, set())
        if len(active) >= self.max_per_user:
            raise rate_limited(
                f"you already have {len(active)} image jobs running (at most {self.max_per_user}); wait for one to finish",
                code="too_many_image_jobs",
            )
        job = Job(id=new_job_id(), owner=owner, workflow=workflow, provider=provider, progress=Progress(value=0, max=total_steps))
        active.add(job.id)
        self._jobs[job.id] = job
        job.events.append(JobEvent(seq=0, kind="status", state=job.state()))
        return job

    def restore(self, stored: StoredJob) -> None:
        self._jobs.setdefault(stored.job_id, Job.restored(stored))

    def discard(self, job: Job) -> None:
        """A job that never started (its submission failed) leaves no trace."""
        self._jobs.pop(job.id, None)
        self._active.get(job.owner, set()).discard(job.id)

    def forget(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.finished:
                del self._jobs[job_id]

    def finished_before(self, moment: datetime) -> list[str]:
        return [job.id for job in self._jobs.values() if job.finished_at is not None and job.finished_at < moment]

    def visible(self, job_id: str, principal: Principal) -> Job:
        """The job, if the caller owns it or is an admin; 404 otherwise, so ids reveal nothing."""
        job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None or (principal.role is not Role.admin and job.owner != principal.user_id):
            raise not_found("no such image job", "job_not_found")
        return job

    async def _publish(self, job: Job, kind: EventKind) -> None:
        async with job.changed:
            job.events.append(JobEvent(seq=len(job.events), kind=kind, state=job.state()))
            job.changed.notify_all()

    async def running(self, job: Job) -> None:
        if job.status is JobStatus.queued:
            job.status = JobStatus.running
            await self._publish(job, "status")

    async def progress(self, job: Job, value: int, maximum: int) -> None:
        if job.finished or (job.progress.value, job.progress.max) == (value, maximum):
            return
        await self.running(job)
        job.progress = Progress(value=value, max=maximum)
        await self._publish(job, "progress")

    async def finish(self, job: Job, status: JobStatus, images: int = 0, error: JobError | None = None) -> None:
        if job.finished:
            return
        job.status, job.images, job.error = status, images, error
        job.finished_at = job.finished_at or datetime.now(UTC)
        if status is JobStatus.succeeded:
            job.progress = Progress(value=job.progress.max, max=job.progress.max)
        self._active.get(job.owner, set()).discard(job.id)
        await self._publish(job, "status")
        await self._publish(job, "end")
        job.done.set()

    @staticmethod
    async def listen(job: Job) -> AsyncIterator[JobEvent]:
        """Every event of the job in order, from the first, ending with the `end` event."""
        sent = 0
        while True:
            async with job.changed:
                while len(job.events) <= sent:
                    await job.changed.wait()
                pending = job.events[sent:]
            for event in pending:
                yield event
                if event.kind == "end":
                    return
            sent += len(pending)


class JobSink:
    """What a backend reports while following one job."""

    def __init__(self, registry: JobRegistry, job: Job):
        self._registry = registry
        self._job = job

    async def running(self) -> None:
        await self._registry.running(self._job)

    async def progress(self, value: int, maximum: int) -> None:
        await self._registry.progress(self._job, value, maximum)
