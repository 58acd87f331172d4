-- One row per budget alert (backend/bff/policy/budget_alerts.py): a user's spend in a period
-- passed a threshold of its limit (budgets.alerts in config/policy.yaml). The row is written once
-- the webhook delivery ended (Delivery: sent, failed after every attempt, or no_webhook when
-- BUDGET_ALERT_WEBHOOK_URL is unset); a BFF checks it before sending, so a restart does not send
-- an alert again. The monitoring page lists the recent rows. No prompt text, no secret. Kept 400 days.
CREATE TABLE IF NOT EXISTS otel.gateway_budget_alerts (
    Timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    AlertId String CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    UserEmail String CODEC(ZSTD(1)),
    UserName String CODEC(ZSTD(1)),
    Period LowCardinality(String),
    PeriodStart Date,
    Threshold Float64,
    LimitUsd Decimal(76, 30),
    SpentUsd Decimal(76, 30),
    ResetsAt DateTime64(3, 'UTC'),
    Delivery LowCardinality(String),
    Attempts UInt8
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(PeriodStart)
ORDER BY (UserId, Period, PeriodStart, Threshold, Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(400);
