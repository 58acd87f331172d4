"""All runtime settings, read from the environment (see .env.example)."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # Process
    bff_host: str = "127.0.0.1"
    bff_port: int = 8080
    bff_dev_mode: bool = False
    log_level: str = "INFO"
    # Longer than any client keeps an idle connection to the BFF (Kong's upstream keepalive
    # is 60 s, SDK pools ~15 s): the client, not the BFF, closes idle connections, so a
    # client never sends on a connection the BFF is closing.
    bff_keepalive_seconds: int = Field(default=75, gt=0)
    # uvicorn worker processes; more than one needs REDIS_URL (one budget and limit per user)
    # and a ClickHouse server (the embedded engine belongs to one process).
    bff_workers: int = Field(default=1, ge=1, le=64)
    # What one connection may hold (a slow or hostile client cannot keep the BFF busy).
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, description="request line and headers together")
    body_receive_timeout_seconds: float = Field(default=120.0, gt=0, description="whole body, from its first read")
    body_idle_timeout_seconds: float = Field(default=15.0, gt=0, description="longest wait for the next body chunk")

    # A 429 for a caller back before their last Retry-After is held until it is over, at most
    # this long (policy/early_retries.py; 0: answered at once), so a retry loop cannot keep the
    # BFF busy; at most this many held per user and in all (open connections), then at once.
    refusal_hold_seconds: float = Field(default=1.0, ge=0, le=10)
    refusal_max_held_per_user: int = Field(default=256, ge=1)
    refusal_max_held: int = Field(default=2048, ge=1)

    # Shared state of replicas and workers: unsettled spend, rate-limit counters, alert
    # de-duplication, image jobs. Unset: in this process (one BFF process only).
    redis_url: SecretStr | None = None

    # LiteLLM proxy
    litellm_url: str = "http://127.0.0.1:4000"
    litellm_master_key: SecretStr
    upstream_connect_timeout_seconds: float = 5.0
    upstream_timeout_seconds: float = 120.0
    catalog_ttl_seconds: float = 30.0
    # Shorter than LiteLLM's server keep-alive (uvicorn's 5 s): the BFF drops an idle pooled
    # connection before LiteLLM closes it, instead of racing LiteLLM's close.
    litellm_pool_keepalive_seconds: float = Field(default=3.0, gt=0)
    # A stream whose caller left after the last content keeps being read this long for
    # LiteLLM's usage event, so the call is billed exactly rather than estimated.
    stream_usage_grace_seconds: float = Field(default=5.0, ge=0, le=60)
    # /health/ready reports LiteLLM down only when no probe answered for this long: one
    # slow probe on a busy machine does not take the BFF out of a load balancer.
    readiness_grace_seconds: float = Field(default=15.0, ge=0)

    # Ollama management (chat with Ollama models goes through LiteLLM)
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_timeout_seconds: float = Field(default=10.0, gt=0, description="listing and deleting models")
    ollama_pull_idle_timeout_seconds: float = Field(default=300.0, gt=0, description="longest wait between pull progress lines")

    # Open-WebUI identity
    webui_secret_key: SecretStr
    allow_tokens_without_exp: bool = False
    open_webui_url: str = "http://127.0.0.1:3000"
    role_source: Literal["api", "db", "static"] = "api"
    role_cache_ttl_seconds: float = 30.0
    open_webui_database_url: SecretStr | None = None
    # ROLE_SOURCE=api: an Open-WebUI admin's API key (or session token) to read the groups of
    # users forwarded by the service key (GET /api/v1/users/{id}/groups); unset: they get none.
    open_webui_admin_token: SecretStr | None = None
    static_roles_file: Path = Path("config/dev-users.yaml")
    bff_service_keys: CommaList = Field(default_factory=list)
    forward_user_info_header_jwt_secret: SecretStr | None = None
    trust_forwarded_user_headers: bool = False

    # Usage store and telemetry
    clickhouse_url: str = Field(
        default_factory=lambda: f"chdb://{Path('.data/clickhouse').resolve()}",
        description="chdb:///abs/path (embedded engine) or http(s)://user:password@host:8123",
    )
    clickhouse_schema_dir: Path = Path("config/clickhouse")
    otel_service_name: str = "llm-bff"
    otel_exporter_otlp_endpoint: str | None = None  # set: spans go to the collector over OTLP/HTTP
    otel_collector_health_url: str | None = None  # the collector's health_check extension, reported by /health/ready
    # every 5 s: each insert has a large fixed cost (see .env.example); budgets stay exact meanwhile
    span_export_interval_ms: int = Field(default=5000, gt=0)
    span_buffer_max: int = Field(default=50_000, gt=0, description="spans kept while ClickHouse is down")

    # How long a user's spend from ClickHouse is reused before asking again (budgets).
    budget_cache_seconds: float = Field(default=10.0, ge=0, le=60)
    # Budget alerts (thresholds in the policy): a Slack-compatible incoming webhook (a secret URL).
    budget_alert_webhook_url: SecretStr | None = None
    budget_alert_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    budget_alert_attempts: int = Field(default=4, ge=1, le=10, description="tries per alert, with backoff")

    # Policy, task routing and request limits
    policy_file: Path = Path("config/policy.yaml")
    routing_file: Path = Path("config/routing.yaml")
    experiments_file: Path = Path("config/experiments.yaml")  # absent: no experiments
    # Open-WebUI ratings pulled with OPEN_WEBUI_ADMIN_TOKEN into otel.gateway_feedback
    # (backend/bff/usage/feedback_sync.py); no token: off, with a warning at start-up.
    feedback_sync_interval_seconds: float = Field(default=60.0, ge=0, description="between polls; 0: off")
    feedback_sync_timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="per call to Open-WebUI")
    feedback_sync_max_pages: int = Field(default=1000, ge=1, description="pages of 30 ratings per poll")
    feedback_sync_deletions_every: int = Field(default=10, ge=1, description="polls between deletion checks")
    generator_mode: Literal["live", "mock"] = "live"
    max_request_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Multipart uploads (speech to text, image edits): OpenAI's limit for audio files.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    cors_allow_origins: CommaList = Field(default_factory=list)
    # Where a reverse proxy publishes the BFF after stripping it (Kong: /gateway): image URLs
    # and the OpenAPI docs then point there. Empty when the BFF is reached directly.
    public_path_prefix: str = Field(default="", pattern=r"^(/[A-Za-z0-9._~\-]+)*$")

    # Images (ComfyUI); GENERATOR_MODE=mock serves every workflow with the mock backend
    comfyui_url: str = "http://127.0.0.1:8188"
    comfyui_workflows_dir: Path = Path("config/comfyui")
    comfyui_timeout_seconds: float = Field(default=180.0, gt=0)
    comfyui_poll_interval_seconds: float = Field(default=1.0, gt=0, description="/history polling when the socket is down")
    mock_image_timeout_seconds: float = Field(default=5.0, gt=0)
    max_image_jobs_per_user: int = Field(default=2, ge=1)
    media_dir: Path = Path(".data/media")
    media_retention_hours: float = Field(default=24.0, gt=0)

    @field_validator("bff_service_keys", "cors_allow_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("bff_service_keys")
    @classmethod
    def _service_keys_long_enough(cls, keys: list[str]) -> list[str]:
        if any(len(key) < 16 for key in keys):
            raise ValueError("each service key must be at least 16 characters")
        return keys

    @model_validator(mode="after")
    def _check_role_source(self) -> "Settings":
        if self.role_source == "static" and not self.bff_dev_mode:
            raise ValueError("ROLE_SOURCE=static is for local development only: set BFF_DEV_MODE=true")
        if self.role_source == "db" and self.open_webui_database_url is None:
            raise ValueError("ROLE_SOURCE=db needs OPEN_WEBUI_DATABASE_URL")
        if not self.webui_secret_key.get_secret_value():
            raise ValueError("WEBUI_SECRET_KEY must not be empty")
        if self.bff_workers > 1 and self.redis_url is None:
            raise ValueError("BFF_WORKERS > 1 needs REDIS_URL: workers must share budgets, limits and image jobs")
        if self.bff_workers > 1 and self.clickhouse_url.startswith("chdb://"):
            raise ValueError("BFF_WORKERS > 1 needs a ClickHouse server (CLICKHOUSE_URL=http://...): the embedded engine serves one process")
        return self
