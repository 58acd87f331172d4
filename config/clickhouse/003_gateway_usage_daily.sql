-- Daily rollup the per-user budgets read: one row per day and dimension set, sums. Kept 5 years.
-- Its view (gateway_usage_daily_mv) is defined in 004_gateway_usage_rollups.sql, fed from the
-- detail rollup there; LatencyMs (reservoir quantile states) is filled only by rows written before
-- that view existed, and nothing reads it any more: the usage API reads the 004 rollups.
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
