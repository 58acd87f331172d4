"""Image jobs in Redis (REDIS_URL): every replica sees every job, and one limit holds per user.

Keys, under KEY_PREFIX + "images:":
- `job:<id>`: a hash, `record` = SharedJob JSON (owner, provider, deadline, state) and
  `status` (the state's status, so the scripts check it without parsing JSON). TTL: the
  retention after the job finished (after its deadline while it runs).
- `events:<id>`: a stream, one entry per event (`seq`, `kind`, `state` JSON), same TTL.
  Listeners XREAD from 0 (the replay) and then block for new entries, on any replica.
- `active:<owner>`: a sorted set of the owner's unfinished job ids, scored by deadline.
  Admission is one Lua script (drop slots past their deadline, count, add), so two
  replicas admitting at once cannot both take the last slot.

The replica running a job is the only writer of its events until the job ends. A replica
that dies mid-job leaves its job unfinished: past the job's deadline (its run timeout
plus a grace for submission and storing), the first reader records it timed_out, with
the same "refuse once terminal" script, so a late writer cannot reopen it either. The
images are files in MEDIA_DIR, which replicas mount shared; a job found on disk but not
in Redis (Redis flushed) is still served to its owner.
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.exceptions import RedisError

from bff.errors import ApiError
from bff.identity.principal import Principal
from bff.media.jobs import (
    TERMINAL,
    EventKind,
    Job,
    JobError,
    JobEvent,
    JobState,
    JobStatus,
    JobStore,
    job_not_found,
    may_see,
    too_many_jobs,
)
from bff.media.storage import JOB_ID, MediaStore
from bff.shared_state import KEY_PREFIX, Redis

log = logging.getLogger("bff.images")

PREFIX = KEY_PREFIX + "images:"
DEADLINE_GRACE_SECONDS = 60.0  # submission to ComfyUI and writing the PNGs come on top of the run's timeout
BLOCK_MS = 1000  # one XREAD wait; below the client's 5 s socket timeout, and how often a listener checks the deadline
EVENT_BATCH = 100
_TERMINAL_LUA = "{" + ", ".join(f"['{status.value}'] = true" for status in sorted(TERMINAL)) + "}"

# KEYS: active set, job hash, events stream. ARGV: now, max per user, job id, deadline,
# slot ttl, record ttl, status, record, kind, state. Returns -1 when admitted, else the count.
ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local active = redis.call('ZCARD', KEYS[1])
if active >= tonumber(ARGV[2]) then return active end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
redis.call('HSET', KEYS[2], 'status', ARGV[7], 'record', ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('XADD', KEYS[3], '*', 'seq', 0, 'kind', ARGV[9], 'state', ARGV[10])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return -1
"""

# KEYS: job hash, events stream, active set. ARGV: ttl, status, record, finished (0/1),
# job id, then kind/state pairs. Refuses (0) a job that is gone or already terminal.
UPDATE = f"""
local terminal = {_TERMINAL_LUA}
local current = redis.call('HGET', KEYS[1], 'status')
if not current or terminal[current] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'record', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local seq = redis.call('XLEN', KEYS[2])
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'seq', seq, 'kind', ARGV[i], 'state', ARGV[i + 1])
  seq = seq + 1
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
if ARGV[4] == '1' then redis.call('ZREM', KEYS[3], ARGV[5]) end
return 1
"""


class SharedJob(BaseModel):
    """What Redis keeps of a job; validated on the way in and on the way out."""

    owner: str
    provider: str
    deadline: datetime
    state: JobState

    def overdue(self, now: datetime) -> bool:
        return self.state.status not in TERMINAL and now > self.deadline


# XREAD's reply (RESP2, decoded): [[stream, [[entry id, {field: value}], ...]], ...]
STREAM_REPLY: TypeAdapter[list[tuple[str, list[tuple[str, dict[str, str]]]]]] = TypeAdapter(
    list[tuple[str, list[tuple[str, dict[str, str]]]]]
)


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def active_key(owner: str) -> str:
    return f"{PREFIX}active:{owner}"


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def unavailable() -> ApiError:
    return ApiError(503, "the shared job store (Redis) is unreachable; try again", "service_unavailable", "shared_state_unavailable")


class RedisJobStore(JobStore):
    def __init__(
        self,
        client: Redis,
        media: MediaStore,
        max_per_user: int,
        grace_seconds: float = DEADLINE_GRACE_SECONDS,
        owns_client: bool = True,
    ):
        super().__init__(max_per_user)
        self._client = client
        self._owns_client = owns_client
        self._media = media
        self._retention = media.retention
        self._grace = timedelta(seconds=grace_seconds)
        self._admit_script = client.register_script(ADMIT)
        self._update_script = client.register_script(UPDATE)

    def _record_ttl(self, job: SharedJob, now: datetime) -> int:
        end = job.state.finished_at if job.state.finished_at is not None else job.deadline
        return _seconds(end + self._retention - now)

    @staticmethod
    def _shared(job: Job) -> SharedJob:
        assert job.deadline is not None  # set at admission
        return SharedJob(owner=job.owner, provider=job.provider, deadline=job.deadline, state=job.state())

    async def _admit(self, job: Job, timeout_seconds: float) -> None:
        now = datetime.now(UTC)
        job.deadline = now + timedelta(seconds=timeout_seconds) + self._grace
        shared = self._shared(job)
        state = shared.state.model_dump_json()
        args: list[str | int | float] = [
            now.timestamp(), self.max_per_user, job.id, job.deadline.timestamp(), _seconds(job.deadline - now),
            self._record_ttl(shared, now), shared.state.status.value, shared.model_dump_json(), "status", state,
        ]
        try:
            active = int(await self._admit_script(keys=[active_key(job.owner), job_key(job.id), events_key(job.id)], args=args))
        except (RedisError, OSError):
            log.warning("image job store unreachable at admission", exc_info=True)
            raise unavailable() from None
        if active >= 0:
            raise too_many_jobs(active, self.max_per_user)

    async def _write(self, job_id: str, shared: SharedJob, kinds: tuple[EventKind, ...]) -> bool:
        """Records the state and appends the events in one step; False if the job was already over."""
        finished = shared.state.status in TERMINAL
        state = shared.state.model_dump_json()
        args: list[str | int] = [self._record_ttl(shared, datetime.now(UTC)), shared.state.status.value, shared.model_dump_json()]
        args += [int(finished), job_id]
        for kind in kinds:
            args += [kind, state]
        keys = [job_key(job_id), events_key(job_id), active_key(shared.owner)]
        return bool(await self._update_script(keys=keys, args=args))

    async def _publish(self, job: Job, kinds: tuple[EventKind, ...]) -> None:
        # The run goes on whatever Redis does: an unrecorded end leaves the job to its deadline.
        try:
            if not await self._write(job.id, self._shared(job), kinds):
                log.warning("image job %s was already given up (past its deadline); its %s was not recorded", job.id, kinds[-1])
        except (RedisError, OSError):
            log.warning("image job %s: the job store is unreachable; %s not recorded", job.id, kinds[-1], exc_info=True)

    async def discard(self, job: Job) -> None:
        try:
            await self._client.delete(job_key(job.id), events_key(job.id))
            await self._client.zrem(active_key(job.owner), job.id)
        except (RedisError, OSError):
            log.warning("image job %s: could not discard it; its slot frees itself at its deadline", job.id, exc_info=True)

    async def _read(self, job_id: str) -> SharedJob | None:
        raw = await self._client.hget(job_key(job_id), "record")
        if raw is None:
            return None
        try:
            return SharedJob.model_validate_json(raw)
        except ValidationError:
            log.error("image job %s: unreadable record in Redis, ignored", job_id)
            return None

    async def _give_up(self, job_id: str, shared: SharedJob) -> JobState | None:
        """Records an overdue job timed_out (its replica stopped); the state that holds afterwards."""
        error = JobError(status=504, code="generation_timeout", message="the gateway replica running this job stopped before it finished")
        state = shared.state.model_copy(update={"status": JobStatus.timed_out, "error": error, "images": 0, "finished_at": shared.deadline})
        if await self._write(job_id, shared.model_copy(update={"state": state}), ("status", "end")):
            log.warning("image job %s of %s passed its deadline unfinished: timed out", job_id, shared.owner)
            return state
        current = await self._read(job_id)  # someone finished or gave it up first
        return None if current is None else current.state

    async def visible(self, job_id: str, principal: Principal) -> JobState:
        if not JOB_ID.match(job_id):
            raise job_not_found()
        try:
            shared = await self._read(job_id)
            if shared is not None:
                if not may_see(principal, shared.owner):
                    raise job_not_found()
                state = await self._give_up(job_id, shared) if shared.overdue(datetime.now(UTC)) else shared.state
                if state is None:
                    raise job_not_found()
                return state
        except (RedisError, OSError):
            log.warning("image job store unreachable", exc_info=True)
            raise unavailable() from None
        stored = await asyncio.to_thread(self._media.read, job_id)  # shared storage outlives a flushed Redis
        if stored is None or not may_see(principal, stored.owner):
            raise job_not_found()
        return Job.restored(stored).state()

    @staticmethod
    def _event(fields: Mapping[str, str]) -> JobEvent:
        return JobEvent.model_validate({"seq": fields["seq"], "kind": fields["kind"], "state": JobState.model_validate_json(fields["state"])})

    async def listen(self, job_id: str, state: JobState) -> AsyncIterator[JobEvent]:
        try:
            async for event in self._follow(job_id, state):
                yield event
        except (RedisError, OSError):
            # The answer has started: the stream ends without `end`, and the client may reconnect.
            log.warning("image job %s: the job store became unreachable while followed", job_id, exc_info=True)

    async def _follow(self, job_id: str, state: JobState) -> AsyncIterator[JobEvent]:
        stream = events_key(job_id)
        if not await self._client.exists(stream):  # a job known from its files only: its end is its story
            yield JobEvent(seq=0, kind="end", state=state)
            return
        last = "0-0"
        while True:
            answer = STREAM_REPLY.validate_python(await self._client.xread({stream: last}, count=EVENT_BATCH, block=BLOCK_MS) or [])
            if not answer:
                # Nothing new for a while: a job past its deadline is given up here, and its
                # status and end events then arrive through the stream like any other.
                shared = await self._read(job_id)
                if shared is None:
                    return  # expired while followed
                if shared.overdue(datetime.now(UTC)):
                    await self._give_up(job_id, shared)
                continue
            for _name, entries in answer:
                for entry_id, fields in entries:
                    last = entry_id
                    event = self._event(fields)
                    yield event
                    if event.kind == "end":
                        return

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
