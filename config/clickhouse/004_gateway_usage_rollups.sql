-- Daily rollups the usage API and the monitoring pages read, in three grains, each with sums and
-- latency and time-to-first-token quantile states. The states are quantilesBFloat16: their merge
-- is exact and order-independent, so a rollup answers exactly what the same function answers over
-- the typed rows (the usage API reads whole UTC days here and the partial days at the range edges
-- from otel.gateway_requests, and merges both). Days are UTC days. Kept 5 years.
--
--   gateway_usage_daily_detail  every dimension, per user (ORDER BY UserId first: a user's own pages)
--   gateway_usage_daily_global  every dimension but the user (the admin pages without a user filter)
--   gateway_usage_daily_users   per user and role only (the admin's usage by user, a user's totals)
--
-- The detail rollup is fed from the typed table; the other two and gateway_usage_daily from it.
-- Small granules: a query reads (and deserializes the quantile states of) whole granules, so a
-- user's rows are read without the states of the users stored next to them.
CREATE TABLE IF NOT EXISTS otel.gateway_usage_daily_detail (
    Day Date,
    UserId String,
    Role LowCardinality(String),
    ModelGroup LowCardinality(String),
    Provider LowCardinality(String),
    Context LowCardinality(String),
    Operation LowCardinality(String),
    HttpStatus UInt16,
    Outcome LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(76, 30)),
    Fallbacks SimpleAggregateFunction(sum, UInt64),
    LatencyMs AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    TtftMs AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Nullable(Float64))
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(Day)
ORDER BY (UserId, Day, ModelGroup, Provider, Context, Operation, Role, HttpStatus, Outcome)
TTL Day + toIntervalDay(1825)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS otel.gateway_usage_daily_global (
    Day Date,
    Role LowCardinality(String),
    ModelGroup LowCardinality(String),
    Provider LowCardinality(String),
    Context LowCardinality(String),
    Operation LowCardinality(String),
    HttpStatus UInt16,
    Outcome LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(76, 30)),
    Fallbacks SimpleAggregateFunction(sum, UInt64),
    LatencyMs AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    TtftMs AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Nullable(Float64))
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(Day)
ORDER BY (Day, ModelGroup, Provider, Context, Operation, Role, HttpStatus, Outcome)
TTL Day + toIntervalDay(1825)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS otel.gateway_usage_daily_users (
    Day Date,
    UserId String,
    Role LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(76, 30)),
    Fallbacks SimpleAggregateFunction(sum, UInt64),
    LatencyMs AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    TtftMs AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Nullable(Float64))
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(Day)
ORDER BY (UserId, Day, Role)
TTL Day + toIntervalDay(1825)
SETTINGS index_granularity = 256;

CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_global_mv
TO otel.gateway_usage_daily_global
AS SELECT
    Day, Role, ModelGroup, Provider, Context, Operation, HttpStatus, Outcome,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(TtftMs) AS TtftMs
FROM otel.gateway_usage_daily_detail
GROUP BY Day, Role, ModelGroup, Provider, Context, Operation, HttpStatus, Outcome;

CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_users_mv
TO otel.gateway_usage_daily_users
AS SELECT
    Day, UserId, Role,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(TtftMs) AS TtftMs
FROM otel.gateway_usage_daily_detail
GROUP BY Day, UserId, Role;

-- A store from before these rollups: fill them once from the typed table (the two views above
-- pass the rows on), before the view below feeds them. Runs only while the detail rollup is empty.
-- (Against a ClickHouse server that takes spans while this runs, spans written between this
-- statement and the next are missing from the rollups.)
INSERT INTO otel.gateway_usage_daily_detail
SELECT
    toDate(Timestamp, 'UTC') AS Day, UserId, Role, ModelGroup, Provider, Context, Operation, HttpStatus, Outcome,
    count() AS Requests,
    countIf(HttpStatus >= 400 OR Outcome = 'upstream_failed') AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks,
    quantilesBFloat16State(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs,
    quantilesBFloat16State(0.5, 0.95, 0.99)(TtftMs) AS TtftMs
FROM otel.gateway_requests
WHERE (SELECT count() FROM otel.gateway_usage_daily_detail) = 0
GROUP BY Day, UserId, Role, ModelGroup, Provider, Context, Operation, HttpStatus, Outcome;

CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_detail_mv
TO otel.gateway_usage_daily_detail
AS SELECT
    toDate(Timestamp, 'UTC') AS Day, UserId, Role, ModelGroup, Provider, Context, Operation, HttpStatus, Outcome,
    count() AS Requests,
    -- a stream that failed after it started answered 200, and is an error all the same
    countIf(HttpStatus >= 400 OR Outcome = 'upstream_failed') AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks,
    quantilesBFloat16State(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs,
    quantilesBFloat16State(0.5, 0.95, 0.99)(TtftMs) AS TtftMs
FROM otel.gateway_requests
GROUP BY Day, UserId, Role, ModelGroup, Provider, Context, Operation, HttpStatus, Outcome;

-- The budgets' rollup (003), now fed from the detail rollup: fewer rows per insert than the typed
-- table. OR REPLACE swaps out the earlier definition that read otel.gateway_requests.
CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_mv
TO otel.gateway_usage_daily
AS SELECT
    Day, UserId, Role, ModelGroup, Provider, Context, Operation,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks
FROM otel.gateway_usage_daily_detail
GROUP BY Day, UserId, Role, ModelGroup, Provider, Context, Operation;
