-- The admin pages' rollup: per UTC day, the totals (Dimension '') and one row per key of each
-- dimension the global rollup keeps (Dimension 'model', 'status', ...; Key as the usage API's
-- breakdown key). A query without filters reads only its dimension's rows: a 90-day breakdown by
-- model merges ~90 x 10 quantile states instead of every row of gateway_usage_daily_global
-- (~23k on 10M spans), the summary and the timeseries 90. The states merge exactly, as in 004.
CREATE TABLE IF NOT EXISTS otel.gateway_usage_daily_dims (
    Dimension LowCardinality(String),
    Day Date,
    Key String,
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
ORDER BY (Dimension, Day, Key)
TTL Day + toIntervalDay(1825)
SETTINGS index_granularity = 256;

-- A store from before this rollup (or before 004: its backfill above has filled the global
-- rollup by now): fill it once from the global rollup, before the view below feeds it. Runs only
-- while this rollup is empty.
INSERT INTO otel.gateway_usage_daily_dims
SELECT
    Dimension, Day, Key,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(TtftMs) AS TtftMs
FROM otel.gateway_usage_daily_global
ARRAY JOIN
    ['', 'model', 'provider', 'role', 'context', 'operation', 'status', 'outcome'] AS Dimension,
    ['', toString(ModelGroup), toString(Provider), toString(Role), toString(Context), toString(Operation),
     toString(HttpStatus), toString(Outcome)] AS Key
WHERE (SELECT count() FROM otel.gateway_usage_daily_dims) = 0
GROUP BY Dimension, Day, Key;

-- Fed from the global rollup's inserts (fewer rows per insert than the detail rollup).
CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_usage_daily_dims_mv
TO otel.gateway_usage_daily_dims
AS SELECT
    Dimension, Day, Key,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CostUsd) AS CostUsd,
    sum(Fallbacks) AS Fallbacks,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(LatencyMs) AS LatencyMs,
    quantilesBFloat16MergeState(0.5, 0.95, 0.99)(TtftMs) AS TtftMs
FROM otel.gateway_usage_daily_global
ARRAY JOIN
    ['', 'model', 'provider', 'role', 'context', 'operation', 'status', 'outcome'] AS Dimension,
    ['', toString(ModelGroup), toString(Provider), toString(Role), toString(Context), toString(Operation),
     toString(HttpStatus), toString(Outcome)] AS Key
GROUP BY Dimension, Day, Key;
