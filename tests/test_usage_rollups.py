"""The usage queries that merge the daily rollups with the typed table answer exactly what the
typed table alone answers; the rollups fill on a fresh store and on a store from before them;
the compose shape (a ClickHouse server) never loads the embedded engine."""

import math
import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import pytest

from bff.clickhouse import ClickHouseStore, _statements
from bff.usage import queries
from bff.usage.models import Bucket, Dimension
from conftest import ROOT

SCHEMA_DIR = ROOT / "config" / "clickhouse"
TYPED_COLUMNS = (
    "Timestamp", "UserId", "Role", "ModelGroup", "Provider", "Context", "Operation", "SessionId",
    "InputTokens", "OutputTokens", "CostUsd", "LatencyMs", "TtftMs", "HttpStatus", "Outcome", "Fallbacks",
)  # fmt: skip
MODELS = (("gpt-4o", "openai"), ("claude", "anthropic"), ("mini", "openai"))
STATUSES = (
    (200, "completed"),
    (200, "completed"),
    (200, "completed"),
    (200, "upstream_failed"),
    (429, "refused"),
    (502, "upstream_failed"),
)
# Far enough back that no other test's spans land there; within the typed table's 400 days.
DAY0 = (datetime.now(UTC) - timedelta(days=220)).replace(hour=0, minute=0, second=0, microsecond=0)


def typed_rows(users: list[str], start: datetime, days: int, per_day: int, seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(days * per_day):
        moment = start + timedelta(seconds=rng.uniform(0, days * 86_400))
        model, provider = rng.choice(MODELS)
        status, outcome = rng.choice(STATUSES)
        stream = rng.random() < 0.6
        # costs as LiteLLM reports them: float text with up to 30 decimal places
        cost = Decimal(str(rng.uniform(0, 0.01))) + Decimal(rng.randint(0, 999)) * Decimal("1e-30")
        rows.append((
            moment, rng.choice(users), rng.choice(("user", "admin")), model, provider, rng.choice(("", "ci", "support")),
            rng.choice(("chat", "embeddings")), f"chat-{rng.randint(0, 5)}", rng.randint(0, 5000), rng.randint(0, 900),
            cost if status == 200 else Decimal(0), rng.lognormvariate(7, 1), rng.lognormvariate(6, 0.5) if stream else None,
            status, outcome, int(rng.random() < 0.05),
        ))  # fmt: skip
    return rows


def insert_typed(store: ClickHouseStore, rows: list[tuple[Any, ...]], database: str = "otel") -> None:
    store.insert_columns(f"{database}.gateway_requests", TYPED_COLUMNS, list(zip(*rows, strict=True)))


def exact_sum(values: Any) -> Decimal:
    """Python's default decimal context keeps 28 digits; Decimal(76, 30) sums need more."""
    with localcontext() as context:
        context.prec = 100
        return sum(values, Decimal(0))


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN (no values) compares equal to NaN."""

    def clean(value: Any) -> Any:
        if isinstance(value, list):
            return [clean(item) for item in value]
        return None if isinstance(value, float) and math.isnan(value) else value

    return [{name: clean(value) for name, value in row.items()} for row in rows]


@pytest.fixture(scope="module")
def store(clickhouse_url: str) -> ClickHouseStore:
    return ClickHouseStore(clickhouse_url, SCHEMA_DIR)


@pytest.fixture(scope="module")
def data(store: ClickHouseStore) -> dict[str, Any]:
    users = [f"rollup-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    rows = typed_rows(users, DAY0, days=9, per_day=300, seed=11)
    # the edges: exactly midnight, the last instant of a day
    rows.append(
        (
            DAY0 + timedelta(days=3),
            users[0],
            "user",
            "gpt-4o",
            "openai",
            "",
            "chat",
            "",
            1,
            1,
            Decimal("0.5"),
            10.0,
            5.0,
            200,
            "completed",
            0,
        )
    )
    rows.append((DAY0 + timedelta(days=4) - timedelta(microseconds=1), users[0], "user", "gpt-4o", "openai", "", "chat", "", 1, 1, Decimal("0.25"), 10.0, None, 200, "completed", 0))  # fmt: skip
    insert_typed(store, rows)
    return {"users": users, "rows": rows}


RANGES = {  # from, to (after DAY0), and whether whole days come from a rollup
    "mid-day to mid-day": (timedelta(days=1, hours=7, minutes=13), timedelta(days=7, hours=15, seconds=1), True),
    "whole days": (timedelta(days=1), timedelta(days=8), True),
    "midnight to mid-day": (timedelta(days=3), timedelta(days=5, hours=2), True),
    "mid-day to midnight": (timedelta(days=2, hours=23, minutes=59), timedelta(days=4), True),
    "within one day": (timedelta(days=3, hours=1), timedelta(days=3, hours=20), False),
    "across one midnight": (timedelta(days=3, hours=20), timedelta(days=4, hours=3), False),
    "one whole day": (timedelta(days=3), timedelta(days=4), True),
}
FILTERS: dict[str, dict[str, str]] = {
    "none": {},
    "user": {"user": "USER"},
    "model": {"model": "claude"},
    "error": {"status": "error"},
    "ok": {"status": "ok"},
    "429": {"status": "429"},
    "user and context": {"user": "USER", "context": "ci"},
}


def answers(
    store: ClickHouseStore, make: Any, query: queries.UsageQuery
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], queries.Plan]:
    sql, params, plan = make(None)
    typed_sql, typed_params, typed_plan = make(query.typed_only())
    assert typed_plan.source == "requests"
    return comparable(store.query(sql, params)), comparable(store.query(typed_sql, typed_params)), plan


@pytest.mark.parametrize("filters", FILTERS.values(), ids=FILTERS.keys())
@pytest.mark.parametrize("edges", RANGES.values(), ids=RANGES.keys())
def test_rollups_and_typed_table_answer_the_same(
    store: ClickHouseStore, data: dict[str, Any], edges: tuple[timedelta, timedelta, bool], filters: dict[str, str]
) -> None:
    values = {name: data["users"][0] if value == "USER" else value for name, value in filters.items()}
    query = queries.UsageQuery.build(DAY0 + edges[0], DAY0 + edges[1], **values)
    whole_day = edges[2]
    assert (query.plan().rollup is not None) == whole_day
    if whole_day and not filters:  # the admin pages: the rollup with one row per dimension key
        assert query.plan().rollup == query.plan(Dimension.model).rollup == queries.KEYED_ROLLUP
    sources = set()
    cases: list[Any] = [lambda plan: queries.summary_sql(query, plan)]
    cases += [lambda plan, bucket=bucket: queries.timeseries_sql(query, bucket, plan) for bucket in Bucket]
    cases += [lambda plan, by=by: queries.breakdown_sql(query, by, 50, plan) for by in Dimension]
    cases += [lambda plan: queries.breakdown_sql(query, Dimension.user, 2, plan)]  # the top keys ranked first
    for make in cases:
        merged, typed, plan = answers(store, make, query)
        assert merged == typed, plan
        assert merged, plan
        sources.add(plan.source)
    if whole_day:
        assert sources & {"rollup", "rollup+requests"}


def test_sums_are_exact_decimals(store: ClickHouseStore, data: dict[str, Any]) -> None:
    user = data["users"][1]
    query = queries.UsageQuery.build(DAY0 + timedelta(hours=5), DAY0 + timedelta(days=8, hours=3), user=user)
    sql, params, plan = queries.summary_sql(query)
    assert plan.source == "rollup+requests"
    expected = exact_sum(row[10] for row in data["rows"] if row[1] == user and query.start <= row[0] < query.end)
    assert store.query(sql, params)[0]["cost_usd"] == expected


def test_edge_of_day_rows_count_once(store: ClickHouseStore, data: dict[str, Any]) -> None:
    """A row at midnight belongs to the day it starts; one an instant before midnight to the day before."""
    user = data["users"][0]
    costs = {}
    for start, end in ((3, 4), (4, 5), (2, 3)):
        query = queries.UsageQuery.build(
            DAY0 + timedelta(days=start), DAY0 + timedelta(days=end), user=user, model="gpt-4o", context=""
        )
        sql, params, plan = queries.summary_sql(query)
        assert plan.source == "rollup"
        merged = store.query(sql, params)
        assert comparable(merged) == comparable(store.query(*queries.summary_sql(query, query.typed_only())[:2]))
        costs[start] = merged[0]["cost_usd"]
    expected = {
        day: exact_sum(
            row[10]
            for row in data["rows"]
            if row[1] == user and row[3] == "gpt-4o" and row[5] == "" and (row[0] - DAY0).days == day
        )
        for day in costs
    }
    assert costs == expected and expected[3] >= Decimal("0.75")


def test_rollup_rows_equal_the_typed_rows(store: ClickHouseStore, data: dict[str, Any]) -> None:
    users = data["users"]
    params = {"users": users, "start": DAY0.date(), "end": (DAY0 + timedelta(days=10)).date()}
    typed = store.query(
        "SELECT count() AS n, sum(CostUsd) AS cost FROM otel.gateway_requests WHERE has({users:Array(String)}, UserId) "
        "AND toDate(Timestamp, 'UTC') >= {start:Date} AND toDate(Timestamp, 'UTC') < {end:Date}",
        params,
    )[0]
    for table in ("gateway_usage_daily_detail", "gateway_usage_daily_users", "gateway_usage_daily"):
        rolled = store.query(
            f"SELECT sum(Requests) AS n, sum(CostUsd) AS cost FROM otel.{table} WHERE has({{users:Array(String)}}, UserId) "
            "AND Day >= {start:Date} AND Day < {end:Date}",
            params,
        )[0]
        assert (rolled["n"], rolled["cost"]) == (typed["n"], typed["cost"]), table


# The daily rollup's view as released before 004_gateway_usage_rollups.sql (it read the typed table).
OLD_DAILY_VIEW = """
CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_mv TO otel.gateway_usage_daily AS SELECT
    toDate(Timestamp) AS Day, UserId, Role, ModelGroup, Provider, Context, Operation,
    toUInt64(count()) AS Requests, toUInt64(countIf(HttpStatus >= 400 OR Outcome = 'upstream_failed')) AS Errors,
    sum(InputTokens) AS InputTokens, sum(OutputTokens) AS OutputTokens, sum(CostUsd) AS CostUsd,
    toUInt64(sum(Fallbacks)) AS Fallbacks, quantilesState(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs
FROM otel.gateway_requests GROUP BY Day, UserId, Role, ModelGroup, Provider, Context, Operation
"""


def _apply(store: ClickHouseStore, sql: str, database: str) -> None:
    for statement in _statements(
        sql.replace("otel.", f"{database}.").replace("DATABASE IF NOT EXISTS otel", f"DATABASE IF NOT EXISTS {database}")
    ):
        store.call(lambda client, statement=statement: client.command(statement))


# The releases before: 001-003 and the daily view over the typed table; 001-004 (no keyed rollup).
RELEASES = {"before the rollups": ("004", OLD_DAILY_VIEW), "before the keyed rollup": ("005", "")}


@pytest.mark.parametrize("release", RELEASES.values(), ids=RELEASES.keys())
def test_a_store_from_before_the_rollups_is_filled_once(store: ClickHouseStore, release: tuple[str, str]) -> None:
    """A release before, with data; then the current files, at every start-up: the new rollups
    hold the old rows once, and new rows too."""
    database = f"upgrade_{uuid.uuid4().hex[:8]}"
    files = {path.name: path.read_text() for path in sorted(SCHEMA_DIR.glob("*.sql"))}
    released = "".join(text for name, text in files.items() if name < release[0]) + release[1]
    _apply(store, released, database)
    old_rows = typed_rows(["old-a", "old-b"], DAY0, days=3, per_day=200, seed=5)
    insert_typed(store, old_rows, database)
    current = "".join(files.values())
    for _ in range(2):  # two start-ups
        _apply(store, current, database)
    new_rows = typed_rows(["old-a", "new-c"], DAY0 + timedelta(days=2), days=2, per_day=100, seed=6)
    insert_typed(store, new_rows, database)
    _apply(store, current, database)
    expected = (len(old_rows) + len(new_rows), exact_sum(row[10] for row in old_rows + new_rows))
    for table in ("gateway_usage_daily_detail", "gateway_usage_daily_global", "gateway_usage_daily_users", "gateway_usage_daily"):
        rolled = store.query(f"SELECT sum(Requests) AS n, sum(CostUsd) AS cost FROM {database}.{table}")[0]
        assert (rolled["n"], rolled["cost"]) == expected, table
    dims = store.query(
        f"SELECT Dimension, sum(Requests) AS n, sum(CostUsd) AS cost FROM {database}.gateway_usage_daily_dims "
        "GROUP BY Dimension ORDER BY Dimension"
    )
    assert [row["Dimension"] for row in dims] == sorted({"", *(str(d) for d in queries.KEYED_ROLLUP.keyed)})
    assert all((row["n"], row["cost"]) == expected for row in dims), dims
    latency = store.query(
        f"SELECT (SELECT quantilesBFloat16Merge(0.5, 0.95, 0.99)(LatencyMs) FROM {database}.gateway_usage_daily_global) AS rolled, "
        f"(SELECT quantilesBFloat16Merge(0.5, 0.95, 0.99)(LatencyMs) FROM {database}.gateway_usage_daily_dims "
        "WHERE Dimension = '') AS keyed, "
        f"(SELECT quantilesBFloat16(0.5, 0.95, 0.99)(LatencyMs) FROM {database}.gateway_requests) AS typed"
    )[0]
    assert latency["rolled"] == latency["keyed"] == latency["typed"]
    store.call(lambda client: client.command(f"DROP DATABASE {database} SYNC"))


COMPOSE_SHAPE = """
import sys
import time
from fastapi.testclient import TestClient
from jose import jwt
from bff.app import create_app
from bff.settings import Settings

settings = Settings(
    litellm_url="http://127.0.0.1:9", litellm_master_key="k", webui_secret_key="s",
    bff_service_keys=["svc-compose-shape-key-0123"], forward_user_info_header_jwt_secret="f",
    clickhouse_url="http://default:pw@127.0.0.1:9/", clickhouse_schema_dir=sys.argv[1] + "/config/clickhouse",
    policy_file=sys.argv[1] + "/config/policy.yaml", routing_file=sys.argv[1] + "/config/routing.yaml",
    comfyui_workflows_dir=sys.argv[1] + "/config/comfyui", media_dir=sys.argv[2],
)
app = create_app(settings)
token = jwt.encode({"sub": "u1", "email": "u1@x.test", "name": "u1", "role": "admin", "iss": "open-webui", "exp": int(time.time()) + 300}, "f", algorithm="HS256")
headers = {"Authorization": "Bearer svc-compose-shape-key-0123", "X-OpenWebUI-User-Jwt": token}
with TestClient(app) as client:  # the lifespan too
    answer = client.get("/api/usage/summary", headers=headers)
    assert answer.status_code == 503, answer.text
loaded = sorted(name for name in sys.modules if name == "chdb" or name.startswith(("chdb.", "chdb_", "_chdb")))
print("chdb modules:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_compose_shape_never_loads_the_embedded_engine(tmp_path: Any) -> None:
    """CLICKHOUSE_URL=http://...: the app and a store call that reaches for ClickHouse import no chdb."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "backend")}
    result = subprocess.run(
        [sys.executable, "-c", COMPOSE_SHAPE, str(ROOT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chdb modules: []" in result.stdout
