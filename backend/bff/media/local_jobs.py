"""Image jobs in this process: one BFF process only (no REDIS_URL), as before replicas.

Each `Job` keeps its own event list (bounded by the job's steps) and a condition that
wakes its listeners; finished jobs found on disk at start-up are restored, so their
owners still see them after a restart.
"""

from collections.abc import AsyncIterator
from datetime import datetime

from bff.identity.principal import Principal
from bff.media.jobs import EventKind, Job, JobEvent, JobState, JobStore, job_not_found, may_see, too_many_jobs
from bff.media.storage import JOB_ID, StoredJob


class LocalJobStore(JobStore):
    def __init__(self, max_per_user: int):
        super().__init__(max_per_user)
        self._jobs: dict[str, Job] = {}
        self._active: dict[str, set[str]] = {}  # owner -> ids of unfinished jobs

    async def _admit(self, job: Job, timeout_seconds: float) -> None:
        # No await before the job is counted: two requests of one user cannot both pass the check.
        active = self._active.setdefault(job.owner, set())
        if len(active) >= self.max_per_user:
            raise too_many_jobs(len(active), self.max_per_user)
        active.add(job.id)
        self._jobs[job.id] = job
        job.events.append(JobEvent(seq=0, kind="status", state=job.state()))

    async def _publish(self, job: Job, kinds: tuple[EventKind, ...]) -> None:
        if job.finished:
            self._active.get(job.owner, set()).discard(job.id)
        async with job.changed:
            for kind in kinds:
                job.events.append(JobEvent(seq=len(job.events), kind=kind, state=job.state()))
            job.changed.notify_all()

    async def discard(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self._active.get(job.owner, set()).discard(job.id)

    def _job(self, job_id: str, principal: Principal) -> Job:
        job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None or not may_see(principal, job.owner):
            raise job_not_found()
        return job

    async def visible(self, job_id: str, principal: Principal) -> JobState:
        return self._job(job_id, principal).state()

    async def listen(self, job_id: str, state: JobState) -> AsyncIterator[JobEvent]:
        job = self._jobs.get(job_id)
        if job is None:  # swept between `visible` and now: its last state is its story
            yield JobEvent(seq=0, kind="end", state=state)
            return
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

    def restore(self, stored: StoredJob) -> None:
        self._jobs.setdefault(stored.job_id, Job.restored(stored))

    def forget(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.finished:
                del self._jobs[job_id]

    def forget_finished_before(self, moment: datetime) -> None:
        self.forget([job.id for job in self._jobs.values() if job.finished_at is not None and job.finished_at < moment])
