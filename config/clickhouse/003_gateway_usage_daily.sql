-- Daily rollup the dashboards and per-user budgets read: one row per day and dimension set,
-- sums plus latency quantile states. Kept 5 years.
CREATE TABLE IF NOT EXISTS otel.gateway_usage_daily (
    Day Date,
    UserId String,
    Role LowCardinality(String),
    ModelGroup LowCardinality(String),
    Provider LowCardinality(String),
    Context LowCardinality(String),
    Operation LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(76, 30)),
    Fallbacks SimpleAggregateFunction(sum, UInt64),
    LatencyMs AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(Day)
ORDER BY (Day, UserId, ModelGroup, Provider, Context, Operation, Role)
TTL Day + toIntervalDay(1825);

CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_mv
TO otel.gateway_usage_daily
AS SELECT
    toDate(Timestamp) AS Day,
    UserId,
    Role,
    ModelGroup,
    Provider,
    Context,
    Operation,
    toUInt64(count()) AS Requests,
    -- a stream that failed after it started answered 200, and is an error all the same
    toUInt64(countIf(HttpStatus >= 400 OR Outcome = 'upstream_failed')) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    toUInt64(sum(Fallbacks)) AS Fallbacks,
    quantilesState(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs
FROM otel.gateway_requests
GROUP BY Day, UserId, Role, ModelGroup, Provider, Context, Operation;
