"""Image generation for the routes: workflow + backend, job start, running, storing, accounting.

The backend of each workflow is fixed at start-up (GENERATOR_MODE and workflows.yaml);
this module only ever asks the workflow's backend. A LiteLLM image model runs the same
kind of job (`start_run`, media/litellm.py). A job's cost (cost_usd_per_image x images,
or LiteLLM's x-litellm-response-cost) and its attributes land on the request's record,
so they reach the span, the usage tables and the budget like any chat cost.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from bff.errors import ApiError, not_found
from bff.media.backends import ImageBackend, JobRun, ProgressSink, Submission, resolve_backends
from bff.media.jobs import Job, JobError, JobSink, JobStatus, JobStore
from bff.media.local_jobs import LocalJobStore
from bff.media.redis_jobs import RedisJobStore
from bff.media.storage import MediaStore
from bff.media.workflows import ImageParams, Workflow, WorkflowCatalog, load_workflows
from bff.pipeline.call import Call, Outcome
from bff.pipeline.context import record_call
from bff.policy.budget_alerts import BudgetAlerts
from bff.policy.budgets import BudgetGuard
from bff.settings import Settings
from bff.shared_state import Redis, connect
from bff.telemetry import attributes as attr

log = logging.getLogger("bff.images")

SWEEP_INTERVAL_SECONDS = 600.0
ACCEPTED = 202


@dataclass
class WorkflowRun:
    """A queued workflow on its backend (ComfyUI or the mock), priced by cost_usd_per_image."""

    workflow: Workflow
    backend: ImageBackend
    submission: Submission

    @property
    def timeout_seconds(self) -> float:
        return self.backend.timeout_seconds

    async def images(self, sink: ProgressSink) -> list[bytes]:
        return await self.backend.follow(self.submission, sink)

    async def stop(self) -> None:
        await self.backend.cancel(self.submission)

    async def close(self) -> None:
        await self.backend.release(self.submission)

    def cost(self, images: int) -> Decimal:
        return self.workflow.config.cost_usd_per_image * images

    def timeout_message(self) -> str:
        return f"no image within {self.timeout_seconds:g} s; the prompt was stopped"


def _owner(call: Call) -> str:
    user_id = call.caller.user_id
    assert user_id is not None  # the images permission needs a user
    return user_id


class ImageService:
    def __init__(
        self,
        catalog: WorkflowCatalog,
        backends: dict[str, ImageBackend],
        distinct_backends: list[ImageBackend],
        store: MediaStore,
        registry: JobStore,
        budgets: BudgetGuard,
        alerts: BudgetAlerts | None = None,
    ):
        self.catalog = catalog
        self._backends = backends
        self._distinct = distinct_backends
        self.store = store
        self.registry = registry
        self._budgets = budgets
        self._alerts = alerts
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls, settings: Settings, budgets: BudgetGuard, redis: Redis | None = None, alerts: BudgetAlerts | None = None
    ) -> "ImageService":
        """With REDIS_URL, jobs live in Redis (any replica sees them; MEDIA_DIR is shared), else here.

        Without a client given, the service connects its own (and closes it in aclose).
        """
        catalog = load_workflows(settings.comfyui_workflows_dir)  # invalid workflows: refuse to start
        backends, distinct = resolve_backends(catalog, settings.generator_mode, settings)
        store = MediaStore(settings.media_dir, settings.media_retention_hours)
        store.sweep()
        client = redis if redis is not None else connect(settings)
        registry: JobStore
        if client is not None:
            registry = RedisJobStore(client, store, settings.max_image_jobs_per_user, owns_client=redis is None)
        else:
            registry = LocalJobStore(settings.max_image_jobs_per_user)
            for stored in store.load():  # Redis keeps finished jobs across restarts; this process does not
                registry.restore(stored)
        return cls(catalog, backends, distinct, store, registry, budgets, alerts)

    def workflow(self, name: str | None) -> Workflow:
        workflow = self.catalog.get(name if name is not None else self.catalog.default)
        if workflow is None:
            raise not_found(f"unknown image workflow '{name}'"[:200], "model_not_found")
        return workflow

    def backend_for(self, workflow: Workflow) -> ImageBackend:
        return self._backends[workflow.name]

    async def start(self, call: Call, workflow: Workflow, params: ImageParams, detach_span: bool) -> Job:
        """Opens the job (429 beyond the user's limit) and queues it (400 rejected, 503 unreachable).

        With `detach_span` the job, not the middleware, ends the request's span when it
        finishes, so the span lasts as long as the generation.
        """
        backend = self.backend_for(workflow)
        call.model = call.model_group = workflow.name
        call.provider = backend.name
        call.extra_attributes.update(
            {
                attr.IMAGES_WORKFLOW: workflow.name,
                attr.IMAGES_COUNT: params.batch_size,
                attr.IMAGES_SIZE: params.size,
                **({attr.IMAGES_STEPS: params.steps} if params.steps is not None else {}),
            }
        )
        job = await self.registry.open(_owner(call), workflow.name, backend.name, params.steps or 0, backend.timeout_seconds)
        try:
            submission = await backend.submit(workflow.fill(params), params)
        except BaseException:
            await asyncio.shield(self.registry.discard(job))
            raise
        self._launch(job, WorkflowRun(workflow, backend, submission), call, detach_span)
        return job

    async def start_run(self, call: Call, name: str, provider: str, total_steps: int, run: JobRun, detach_span: bool) -> Job:
        """A job whose run needs no queueing first (a LiteLLM image model: media/litellm.py)."""
        job = await self.registry.open(_owner(call), name, provider, total_steps, run.timeout_seconds)
        self._launch(job, run, call, detach_span)
        return job

    def _launch(self, job: Job, run: JobRun, call: Call, detach_span: bool) -> None:
        task = asyncio.create_task(self._run(job, run, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        call.span_detached = detach_span  # before any await: the job cannot have ended yet

    async def _run(self, job: Job, run: JobRun, call: Call) -> None:
        try:
            await self._follow(job, run, call)
        finally:
            await run.close()
            if call.span_detached:
                await self._end_span(call, job)

    async def _follow(self, job: Job, run: JobRun, call: Call) -> None:
        try:
            async with asyncio.timeout(run.timeout_seconds):
                images = await run.images(JobSink(self.registry, job))
            job.images, job.finished_at = len(images), datetime.now(UTC)
            job.provider = call.provider or job.provider  # what served it, after LiteLLM's fallbacks
            await asyncio.to_thread(self.store.save, job.stored(), images)
        except TimeoutError:
            await run.stop()
            error = ApiError(504, run.timeout_message(), "timeout_error", "generation_timeout")
            await self._fail(job, call, error, JobStatus.timed_out)
            return
        except ApiError as exc:
            await self._fail(job, call, exc)
            return
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(run.stop())
            await self._fail(job, call, ApiError(503, "the gateway shut down during the generation", "service_unavailable", "shutdown"))
            raise
        except Exception:
            log.exception("image job failed")
            await self._fail(job, call, ApiError(500, "internal error", "internal_error", "internal_error"))
            return
        call.cost_usd = job.cost_usd = run.cost(len(images)) or Decimal(0)
        call.extra_attributes[attr.IMAGES_COUNT] = len(images)
        await self.registry.finish(job, JobStatus.succeeded, images=len(images))

    async def _fail(self, job: Job, call: Call, error: ApiError, status: JobStatus = JobStatus.failed) -> None:
        call.fail(error.code, Outcome.upstream_failed)
        job.images = 0
        job.cost_usd = call.cost_usd or Decimal(0)  # a LiteLLM answer that was billed, then unusable
        await self.registry.finish(job, status, error=JobError.of(error))

    async def _end_span(self, call: Call, job: Job) -> None:
        """What the middleware does for attached spans, at the end of the job."""
        status = ACCEPTED if job.status is JobStatus.succeeded else (job.error.status if job.error else 500)
        await record_call(call, status, self._budgets, self._alerts)

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                removed = await asyncio.to_thread(self.store.sweep)
            except OSError as exc:
                log.warning("media sweep failed: %s", exc)
                continue
            self.registry.forget(removed)
            self.registry.forget_finished_before(datetime.now(UTC) - self.store.retention)

    def start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self.sweep_forever())

    async def aclose(self) -> None:
        """Stops running jobs (their prompts are cancelled upstream) and closes the backends."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for backend in self._distinct:
            await backend.aclose()
        await self.registry.aclose()
