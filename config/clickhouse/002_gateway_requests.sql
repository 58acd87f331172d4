-- One typed row per gateway request, extracted from the BFF's spans in otel_traces.
-- Costs are Decimal(76, 30): LiteLLM reports float costs such as 2.4999999999999998e-05, whose
-- exact decimal needs more than 18 places; sums over them then match what LiteLLM reported.
-- Attribute names are documented in backend/bff/telemetry/attributes.py. Kept 400 days.
CREATE TABLE IF NOT EXISTS otel.gateway_requests (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String),
    RequestId String CODEC(ZSTD(1)),
    Operation LowCardinality(String),
    Route LowCardinality(String),
    RequestedModel LowCardinality(String),
    ModelGroup LowCardinality(String),
    Provider LowCardinality(String),
    DeploymentId String CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    Role LowCardinality(String),
    AuthMethod LowCardinality(String),
    SessionId String CODEC(ZSTD(1)),
    Context LowCardinality(String),
    Stream Bool,
    InputTokens UInt64,
    OutputTokens UInt64,
    TotalTokens UInt64,
    CostUsd Decimal(76, 30),
    LatencyMs Float64,
    TtftMs Nullable(Float64),
    Retries UInt32,
    Fallbacks UInt32,
    HttpStatus UInt16,
    ErrorType LowCardinality(String),
    Outcome LowCardinality(String),
    CostEstimated Bool,
    Task LowCardinality(String),
    MessageId String CODEC(ZSTD(1)),
    Experiment LowCardinality(String),
    Variant LowCardinality(String),
    INDEX idx_session SessionId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_user UserId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_request RequestId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (toDate(Timestamp), UserId, ModelGroup, Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(400);

-- Columns added after the first release, for stores created before them.
ALTER TABLE otel.gateway_requests ADD COLUMN IF NOT EXISTS Outcome LowCardinality(String) AFTER ErrorType;
ALTER TABLE otel.gateway_requests ADD COLUMN IF NOT EXISTS CostEstimated Bool AFTER Outcome;
ALTER TABLE otel.gateway_requests ADD COLUMN IF NOT EXISTS Task LowCardinality(String) AFTER CostEstimated;
ALTER TABLE otel.gateway_requests ADD COLUMN IF NOT EXISTS MessageId String CODEC(ZSTD(1)) AFTER Task;
ALTER TABLE otel.gateway_requests ADD COLUMN IF NOT EXISTS Experiment LowCardinality(String) AFTER MessageId;
ALTER TABLE otel.gateway_requests ADD COLUMN IF NOT EXISTS Variant LowCardinality(String) AFTER Experiment;

-- OR REPLACE: an upgraded BFF swaps in its own definition (atomically) at start-up.
CREATE OR REPLACE MATERIALIZED VIEW otel.gateway_requests_mv
TO otel.gateway_requests
AS SELECT
    Timestamp,
    TraceId,
    SpanId,
    ServiceName,
    SpanAttributes['gateway.request_id'] AS RequestId,
    SpanAttributes['gateway.operation'] AS Operation,
    SpanAttributes['gateway.route'] AS Route,
    SpanAttributes['gen_ai.request.model'] AS RequestedModel,
    -- the served group; a refused request has none, so it counts under the requested model
    if(SpanAttributes['gen_ai.response.model'] != '', SpanAttributes['gen_ai.response.model'], SpanAttributes['gen_ai.request.model']) AS ModelGroup,
    SpanAttributes['gen_ai.provider.name'] AS Provider,
    SpanAttributes['gateway.deployment_id'] AS DeploymentId,
    SpanAttributes['enduser.id'] AS UserId,
    SpanAttributes['gateway.user.role'] AS Role,
    SpanAttributes['gateway.auth.method'] AS AuthMethod,
    SpanAttributes['session.id'] AS SessionId,
    SpanAttributes['gateway.context'] AS Context,
    SpanAttributes['gateway.stream'] = 'true' AS Stream,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens']) AS InputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens']) AS OutputTokens,
    toUInt64OrZero(SpanAttributes['gateway.usage.total_tokens']) AS TotalTokens,
    toDecimal256OrZero(SpanAttributes['gateway.cost.usd'], 30) AS CostUsd,
    Duration / 1e6 AS LatencyMs,
    toFloat64OrNull(SpanAttributes['gateway.ttft_ms']) AS TtftMs,
    toUInt32OrZero(SpanAttributes['gateway.retries']) AS Retries,
    toUInt32OrZero(SpanAttributes['gateway.fallbacks']) AS Fallbacks,
    toUInt16OrZero(SpanAttributes['http.response.status_code']) AS HttpStatus,
    SpanAttributes['error.type'] AS ErrorType,
    -- how the request ended (gateway.outcome); spans from before it: by status
    if(SpanAttributes['gateway.outcome'] != '', SpanAttributes['gateway.outcome'],
       multiIf(HttpStatus >= 500, 'upstream_failed', HttpStatus >= 400, 'refused', 'completed')) AS Outcome,
    SpanAttributes['gateway.cost.estimated'] = 'true' AS CostEstimated,
    SpanAttributes['gateway.task'] AS Task,
    SpanAttributes['gateway.message_id'] AS MessageId,
    SpanAttributes['gateway.experiment'] AS Experiment,
    SpanAttributes['gateway.variant'] AS Variant
FROM otel.otel_traces
WHERE SpanAttributes['gateway.operation'] != '';
