"""Open-WebUI ratings joined to the gateway's requests (parameterised SQL only).

Ratings live in otel.gateway_feedback (config/clickhouse/007_gateway_feedback.sql), filled by
backend/bff/usage/feedback_sync.py: one row per Open-WebUI feedback id, read with FINAL.

Shared with the experiment results (import these, do not copy them):

- `LATEST_RATINGS_SQL`: a subquery with the latest live rating per (UserId, ChatId, MessageId).
  Open-WebUI can hold several feedback rows for one message (the UI creates a new row when an
  edit fails); only the most recently updated one counts. Columns: UserId, ChatId, MessageId,
  Rating (1 up, -1 down), DetailRating (Nullable UInt8, 1-10), Reason, Tags, UpdatedAt.
- `RATING_JOIN`: how a request row `r` of otel.gateway_requests finds its rating `f`
  (`LEFT JOIN (LATEST_RATINGS_SQL) AS f ON {RATING_JOIN}`). The feedback's user is set by
  Open-WebUI's server; its chat and message ids come from the browser, so they only count
  together with the user. The model, variant and task always come from the request row.
- `wilson_interval(up, n)`: the Wilson 95 % score interval of the up-share.
"""

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bff.usage.models import FeedbackDimension, FeedbackRow

FEEDBACK_TABLE = "otel.gateway_feedback"
REQUESTS_TABLE = "otel.gateway_requests"

LATEST_RATINGS_SQL = (
    "SELECT UserId, ChatId, MessageId, "
    "tupleElement(latest, 1) AS Rating, tupleElement(latest, 2) AS DetailRating, "
    "tupleElement(latest, 3) AS Reason, tupleElement(latest, 4) AS Tags, max_updated AS UpdatedAt "
    "FROM (SELECT UserId, ChatId, MessageId, "
    # a tuple, so a NULL detail rating is taken as it is (argMax skips NULL arguments)
    "argMax(tuple(Rating, DetailRating, Reason, Tags), tuple(UpdatedAt, FeedbackId)) AS latest, "
    "max(UpdatedAt) AS max_updated "
    f"FROM {FEEDBACK_TABLE} FINAL "
    "WHERE Deleted = 0 AND MessageId != '' AND Rating IN (1, -1) "
    "GROUP BY UserId, ChatId, MessageId)"
)

RATING_JOIN = "r.UserId = f.UserId AND r.SessionId = f.ChatId AND r.MessageId = f.MessageId"

Z_95 = 1.959963984540054


def wilson_interval(up: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of up / n (None without any rating)."""
    if n <= 0:
        return None
    p = up / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


MAX_GROUPS = 1000


@dataclass(frozen=True)
class FeedbackQuery:
    start: datetime  # the requests' time (when the gateway served the rated answer)
    end: datetime
    by: FeedbackDimension
    experiment: str | None = None
    model: str | None = None
    user: str | None = None


def rated_requests_sql(where: str) -> str:
    """The rated requests: one row per served message (its last span) with its latest rating.
    `where` filters otel.gateway_requests (alias r) and may use query parameters."""
    return (
        "SELECT r.UserId AS UserId, r.SessionId AS SessionId, r.MessageId AS MessageId, "
        "argMax(r.ModelGroup, r.Timestamp) AS ModelGroup, argMax(r.Experiment, r.Timestamp) AS Experiment, "
        "argMax(r.Variant, r.Timestamp) AS Variant, argMax(r.Task, r.Timestamp) AS Task, "
        "any(f.Rating) AS Rating, any(f.DetailRating) AS DetailRating "
        f"FROM {REQUESTS_TABLE} AS r INNER JOIN ({LATEST_RATINGS_SQL}) AS f ON {RATING_JOIN} "
        f"WHERE r.MessageId != '' AND {where} "
        "GROUP BY r.UserId, r.SessionId, r.MessageId"
    )


def feedback_sql(query: FeedbackQuery) -> tuple[str, dict[str, Any]]:
    """Counts up and down and the mean detail rating per group of `query.by`."""
    clauses = ["r.Timestamp >= {start:DateTime64(6, 'UTC')}", "r.Timestamp < {end:DateTime64(6, 'UTC')}"]
    params: dict[str, Any] = {"start": query.start, "end": query.end, "limit": MAX_GROUPS}
    if query.experiment is not None:
        clauses.append("r.Experiment = {experiment:String}")
        params["experiment"] = query.experiment
    if query.model is not None:
        clauses.append("r.ModelGroup = {model:String}")
        params["model"] = query.model
    if query.user is not None:
        clauses.append("r.UserId = {user:String}")
        params["user"] = query.user
    if query.by is FeedbackDimension.variant and query.experiment is None:
        clauses.append("r.Experiment != ''")
    rated = rated_requests_sql(" AND ".join(clauses))
    keys = {
        FeedbackDimension.model: "ModelGroup AS model, '' AS experiment, '' AS variant, '' AS task",
        FeedbackDimension.variant: "'' AS model, Experiment AS experiment, Variant AS variant, '' AS task",
        FeedbackDimension.task: "'' AS model, '' AS experiment, '' AS variant, Task AS task",
    }[query.by]
    group = {
        FeedbackDimension.model: "ModelGroup",
        FeedbackDimension.variant: "Experiment, Variant",
        FeedbackDimension.task: "Task",
    }[query.by]
    sql = (
        f"SELECT {keys}, countIf(Rating = 1) AS up, countIf(Rating = -1) AS down, "
        "avgOrNull(DetailRating) AS detail_mean, count(DetailRating) AS detail_count "
        f"FROM ({rated}) GROUP BY {group} ORDER BY up + down DESC, {group} LIMIT {{limit:UInt32}}"
    )
    return sql, params


def feedback_result(rows: list[dict[str, Any]], by: FeedbackDimension) -> list[FeedbackRow]:
    result: list[FeedbackRow] = []
    for row in rows:
        up, down = int(row["up"]), int(row["down"])
        interval = wilson_interval(up, up + down)
        mean = row["detail_mean"]
        keys: dict[str, str] = {
            FeedbackDimension.model: {"model": str(row["model"])},
            FeedbackDimension.variant: {"experiment": str(row["experiment"]), "variant": str(row["variant"])},
            FeedbackDimension.task: {"task": str(row["task"])},
        }[by]
        result.append(
            FeedbackRow(
                **keys,
                up=up,
                down=down,
                rated=up + down,
                up_share=round(up / (up + down), 6) if up + down else None,
                up_share_low=round(interval[0], 6) if interval else None,
                up_share_high=round(interval[1], 6) if interval else None,
                detail_rating_mean=None if mean is None or math.isnan(mean) else round(float(mean), 3),
                detail_ratings=int(row["detail_count"]),
            )
        )
    return result
