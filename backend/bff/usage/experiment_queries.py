"""Parameterised queries of the experiment results (GET /api/experiments[/{name}]).

Every figure is read from the typed request table (otel.gateway_requests), whose Experiment and
Variant columns come from the span (gateway.experiment, gateway.variant). The rollups keep no
variant, so nothing here reads them. Per variant:

  users, requests          uniqExact(UserId), count()
  errors                   as the usage API counts them: HTTP status >= 400, or a stream that
                           failed after it started with 200 (Outcome 'upstream_failed')
  cost                     the exact Decimal sum of CostUsd
  latency p50/p95, TTFT    quantilesExact: the value at position floor(n x level) of the sorted
                           values (no interpolation, no approximation); TTFT over streamed
                           requests only (TtftMs is NULL otherwise)
  feedback                 Open-WebUI ratings: bff.usage.feedback_queries' latest rating per
                           (user, chat, message), joined on (UserId, ChatId, MessageId) =
                           (UserId, SessionId, MessageId) to the experiment's answers (not to
                           task calls such as title generation: a rating is of the answer);
                           one count per rated message; the up-share's Wilson 95 % interval
                           computed in Python from the counts (wilson_interval, z = 1.96)

Caller-supplied values (the experiment's name, the range) travel only as query parameters.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bff.policy.experiments import Experiment
from bff.usage.experiment_models import (
    ExperimentSummary,
    Feedback,
    LatencyPercentiles,
    TargetOut,
    VariantConfig,
    VariantHeadline,
    VariantResult,
    WilsonInterval,
)
from bff.usage.feedback_queries import rated_requests_sql, wilson_interval
from bff.usage.models import Range
from bff.usage.queries import MAX_RANGE, TYPED_TABLE, UsageQuery

# As bff.usage.queries counts a failed request (and the rollups do).
FAILED = "(HttpStatus >= 400 OR Outcome = 'upstream_failed')"
_RANGE = "Timestamp >= {start:DateTime64(6, 'UTC')} AND Timestamp < {end:DateTime64(6, 'UTC')}"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def range(self) -> Range:
        return Range(from_=self.start, to=self.end)

    def params(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end}


def default_window(experiment: Experiment) -> Window:
    """The experiment's own window, its last 400 days if it is longer (the store keeps 400)."""
    end = experiment.end.astimezone(UTC)
    return Window(max(experiment.start.astimezone(UTC), end - MAX_RANGE), end)


def window(experiment: Experiment, start: datetime | None, end: datetime | None) -> Window:
    """from/to as the usage API bounds them (400 days at most, from before to); absent ones
    default to the experiment's window."""
    default = default_window(experiment)
    if start is None and end is not None:
        start = max(default.start, _utc(end) - MAX_RANGE)
    checked = UsageQuery.build(start or default.start, end or default.end)
    return Window(checked.start, checked.end)


def summary(
    experiment: Experiment, now: datetime, requests: dict[str, int], span: Window | None = None
) -> ExperimentSummary:
    """The experiment's configuration, and its requests per variant within `span` (default: its window)."""
    total = sum(variant.weight for variant in experiment.variants)
    target = experiment.target
    return ExperimentSummary(
        name=experiment.name,
        description=experiment.description,
        target=TargetOut(model=target.model, task=target.task, context=target.context),
        variants=[
            VariantConfig(
                name=variant.name,
                model=variant.model,
                weight=variant.weight,
                share=variant.weight / total,
                control=variant.name == experiment.control.name,
            )
            for variant in experiment.variants
        ],
        control=experiment.control.name,
        start=experiment.start,
        end=experiment.end,
        active=experiment.active(now),
        range=(span or default_window(experiment)).range(),
        requests=[VariantHeadline(variant=name, requests=count) for name, count in _ordered(experiment, requests)],
    )


def headline_sql(experiments: list[Experiment]) -> tuple[str, dict[str, Any]]:
    """Requests per (experiment, variant), each experiment over its own default window."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for index, experiment in enumerate(experiments):
        span = default_window(experiment)
        clauses.append(
            f"(Experiment = {{name_{index}:String}} AND Timestamp >= {{start_{index}:DateTime64(6, 'UTC')}} "
            f"AND Timestamp < {{end_{index}:DateTime64(6, 'UTC')}})"
        )
        params.update({f"name_{index}": experiment.name, f"start_{index}": span.start, f"end_{index}": span.end})
    sql = (
        f"SELECT Experiment AS experiment, Variant AS variant, count() AS requests FROM {TYPED_TABLE} "
        f"WHERE {' OR '.join(clauses)} GROUP BY Experiment, Variant"
    )
    return sql, params


def headline_result(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        found.setdefault(str(row["experiment"]), {})[str(row["variant"])] = int(row["requests"])
    return found


def results_sql(experiment: Experiment, span: Window) -> tuple[str, str, dict[str, Any]]:
    """Per variant: the request figures, and the ratings of its answers."""
    where = f"Experiment = {{experiment:String}} AND {_RANGE}"
    params = {"experiment": experiment.name, **span.params()}
    figures = (
        f"SELECT Variant AS variant, uniqExact(UserId) AS users, count() AS requests, countIf({FAILED}) AS errors, "
        "sum(CostUsd) AS cost_usd, quantilesExact(0.5, 0.95)(LatencyMs) AS latency, "
        "quantilesExact(0.5, 0.95)(TtftMs) AS ttft, count(TtftMs) AS streamed "
        f"FROM {TYPED_TABLE} WHERE {where} GROUP BY Variant"
    )
    # the shared join (bff.usage.feedback_queries): one row per rated message of the experiment
    rated = rated_requests_sql(
        "r.Experiment = {experiment:String} AND r.Timestamp >= {start:DateTime64(6, 'UTC')} "
        "AND r.Timestamp < {end:DateTime64(6, 'UTC')} AND r.Task = ''"
    )
    ratings = (
        "SELECT Variant AS variant, countIf(Rating = 1) AS up, countIf(Rating = -1) AS down "
        f"FROM ({rated}) GROUP BY Variant"
    )
    return figures, ratings, params


def feedback(up: int, down: int) -> Feedback:
    """Counts, the up-share and its Wilson 95 % score interval (None without ratings)."""
    rated = up + down
    interval = wilson_interval(up, rated)
    return Feedback(
        up=up,
        down=down,
        up_share=up / rated if rated else None,
        up_share_95=WilsonInterval(low=interval[0], high=interval[1]) if interval else None,
    )


def results(
    experiment: Experiment, figures: list[dict[str, Any]], ratings: list[dict[str, Any]]
) -> list[VariantResult]:
    """Every configured variant (zeros when it served nothing), then any variant name the rows
    hold that the file no longer has."""
    by_variant = {str(row["variant"]): row for row in figures}
    rated = {str(row["variant"]): (int(row["up"]), int(row["down"])) for row in ratings}
    configured = {variant.name: variant.model for variant in experiment.variants}
    names = list(configured) + sorted((set(by_variant) | set(rated)) - set(configured))
    answer: list[VariantResult] = []
    for name in names:
        row = by_variant.get(name)
        result = VariantResult(
            variant=name,
            model=configured.get(name),
            configured=name in configured,
            control=name == experiment.control.name,
            feedback=feedback(*rated.get(name, (0, 0))),
        )
        if row is not None:
            requests, errors = int(row["requests"]), int(row["errors"])
            cost = Decimal(row["cost_usd"] or 0)
            streamed = int(row["streamed"])
            result = result.model_copy(
                update={
                    "users": int(row["users"]),
                    "requests": requests,
                    "errors": errors,
                    "error_rate": errors / requests if requests else None,
                    "cost_usd": float(cost),
                    "cost_per_request_usd": float(cost / requests) if requests else None,
                    "latency_ms": _percentiles(row["latency"]) if requests else LatencyPercentiles(),
                    "ttft_ms": _percentiles(row["ttft"]) if streamed else LatencyPercentiles(),
                }
            )
        answer.append(result)
    return answer


def _percentiles(values: list[float] | None) -> LatencyPercentiles:
    clean = [None if v is None or math.isnan(v) else round(float(v), 3) for v in (values or [])]
    return LatencyPercentiles(**dict(zip(("p50", "p95"), clean, strict=False)))


def _ordered(experiment: Experiment, counts: dict[str, int]) -> list[tuple[str, int]]:
    names = [variant.name for variant in experiment.variants]
    return [(name, counts.get(name, 0)) for name in names] + sorted(
        (name, count) for name, count in counts.items() if name not in names
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

