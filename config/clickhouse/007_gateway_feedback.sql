-- Ratings given in Open-WebUI (its `feedback` table, read through its evaluations API by
-- backend/bff/usage/feedback_sync.py), one row per Open-WebUI feedback id. Re-reading a rating,
-- or a rating changed in Open-WebUI (a newer updated_at), replaces the row (ReplacingMergeTree
-- on UpdatedAt; Deleted = 1 once Open-WebUI no longer has it): read with FINAL.
-- The join to gateway requests is (UserId, ChatId, MessageId) = (UserId, SessionId, MessageId):
-- Open-WebUI sets the feedback's user itself; its model id and other fields come from the
-- browser, so the model and variant are always taken from the gateway's own span.
-- No comment text is stored (free text of the user): only whether there was one. Kept 400 days.
CREATE TABLE IF NOT EXISTS otel.gateway_feedback (
    FeedbackId String CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    ChatId String CODEC(ZSTD(1)),
    MessageId String CODEC(ZSTD(1)),
    ModelId LowCardinality(String),         -- as Open-WebUI's browser named it (informational)
    Rating Int8,                            -- 1 thumbs up, -1 thumbs down
    DetailRating Nullable(UInt8),           -- the 1-10 score, when given
    Reason LowCardinality(String),
    Tags Array(LowCardinality(String)),
    HasComment Bool,
    CreatedAt DateTime64(3, 'UTC'),
    UpdatedAt DateTime64(3, 'UTC'),
    Deleted UInt8,
    SyncedAt DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(UpdatedAt, Deleted)
ORDER BY FeedbackId
TTL toDateTime(CreatedAt) + toIntervalDay(400);

-- People by name (backend/bff/usage/users.py): the latest name, email and role the gateway saw
-- for each user (forwarded identity or role source), kept once per user rather than on every
-- span. Admins see them in the usage API and the monitoring pages. Read with FINAL.
CREATE TABLE IF NOT EXISTS otel.gateway_users (
    UserId String CODEC(ZSTD(1)),
    Name String CODEC(ZSTD(1)),
    Email String CODEC(ZSTD(1)),
    Role LowCardinality(String),
    SeenAt DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(SeenAt)
ORDER BY UserId;
