"""Results of the A/B experiments of config/experiments.yaml, for admins (usage.all)."""

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query

from bff.errors import forbidden, not_found
from bff.pipeline.call import Call
from bff.pipeline.operations import CallerCall
from bff.policy.experiments import NAME
from bff.policy.model import Permission
from bff.routes.usage import run_query
from bff.services import Services, ServicesDep
from bff.usage import experiment_queries as queries
from bff.usage.experiment_models import ExperimentList, ExperimentResults

log = logging.getLogger("bff.experiments")
router = APIRouter(prefix="/api/experiments", tags=["experiments"])
T = TypeVar("T")


def _require_admin(services: Services, call: Call) -> None:
    principal = call.caller
    if principal.is_service_only:
        raise forbidden("a service key without a forwarded user cannot read experiments", "user_identity_required")
    services.access.require(principal, Permission.usage_all)


@router.get("", response_model=ExperimentList, summary="Every configured experiment, with requests per variant (usage.all)")
async def list_experiments(services: ServicesDep, call: CallerCall) -> ExperimentList:
    _require_admin(services, call)
    configured = services.experiments.all
    counts: dict[str, dict[str, int]] = {}
    if configured:
        sql, params = queries.headline_sql(configured)
        counts = queries.headline_result(await run_query(services, lambda: services.store.query(sql, params)))
    now = datetime.now(UTC)
    return ExperimentList(
        experiments=[queries.summary(experiment, now, counts.get(experiment.name, {})) for experiment in configured]
    )


@router.get("/{name}", response_model=ExperimentResults, summary="One experiment's results per variant (usage.all)")
async def experiment_results(
    services: ServicesDep,
    call: CallerCall,
    name: Annotated[str, Path(pattern=NAME)],
    from_: Annotated[
        datetime | None, Query(alias="from", description="start (ISO 8601); default: the experiment's start")
    ] = None,
    to: Annotated[datetime | None, Query(description="end (ISO 8601, exclusive); default: the experiment's end")] = None,
) -> ExperimentResults:
    """Users, requests, errors, cost, latency, TTFT and Open-WebUI feedback per variant; the range
    at most 400 days (default: the experiment's window, its last 400 days if longer)."""
    _require_admin(services, call)
    experiment = services.experiments.get(name)
    if experiment is None:
        raise not_found(f"no experiment '{name}' in the experiments file", "experiment_not_found")
    span = queries.window(experiment, from_, to)
    figures_sql, ratings_sql, params = queries.results_sql(experiment, span)

    def work() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return services.store.query(figures_sql, params), services.store.query(ratings_sql, params)

    figures, ratings = await run_query(services, work)
    counts = {str(row["variant"]): int(row["requests"]) for row in figures}
    summary = queries.summary(experiment, datetime.now(UTC), counts, span)
    return ExperimentResults(
        experiment=summary,
        range=span.range(),
        control=experiment.control.name,
        variants=queries.results(experiment, figures, ratings),
    )
