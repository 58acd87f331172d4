"""Span attribute names: OpenTelemetry semantic conventions where they exist, `gateway.*` for the rest.

config/clickhouse/002_gateway_requests.sql extracts exactly these into typed columns.
Values are strings in ClickHouse; the cost is a plain decimal string so sums stay exact.
"""

# Semantic conventions (gen_ai.*, enduser, session, http, error)
OPERATION_NAME = "gen_ai.operation.name"  # chat
REQUEST_MODEL = "gen_ai.request.model"  # the model name the caller asked for
RESPONSE_MODEL = "gen_ai.response.model"  # the model group that served (after fallback)
PROVIDER = "gen_ai.provider.name"  # openai, anthropic, gemini, ollama_chat, ...
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USER_ID = "enduser.id"  # Open-WebUI user id
SESSION_ID = "session.id"  # Open-WebUI chat id, when Open-WebUI forwards it
HTTP_STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"  # the error code of the gateway's error body

# The gateway's own namespace
OPERATION = "gateway.operation"  # present on every gateway span: the ClickHouse view keys on it
ROUTE = "gateway.route"
REQUEST_ID = "gateway.request_id"
DEPLOYMENT_ID = "gateway.deployment_id"  # LiteLLM's x-litellm-model-id
TOTAL_TOKENS = "gateway.usage.total_tokens"
COST_USD = "gateway.cost.usd"  # decimal string, e.g. "0.000025"
COST_ESTIMATED = "gateway.cost.estimated"  # "true" when a cut stream was charged an estimate
OUTCOME = "gateway.outcome"  # completed | refused | upstream_failed | client_disconnected
SERVED_OUTSIDE_POLICY = "gateway.served_outside_policy"  # "true": a bug, alarmed in the log
DOWNGRADED_FROM = "gateway.downgraded_from"  # the model asked for, when past the budget a cheaper one served
ROLE = "gateway.user.role"
AUTH_METHOD = "gateway.auth.method"
CONTEXT = "gateway.context"  # caller-supplied tag, header X-LLM-Context
TASK = "gateway.task"  # /api/llm/generate's task, or Open-WebUI's task call (title_generation, ...)
REFUSAL_HELD_MS = "gateway.refusal.held_ms"  # a 429 held because its caller came back before Retry-After
TASK_ROUTED_FROM = "gateway.task.routed_from"  # the model Open-WebUI asked for, when routing.yaml sent its task elsewhere
MESSAGE_ID = "gateway.message_id"  # Open-WebUI's message id: its ratings join on (session.id, this)
EXPERIMENT = "gateway.experiment"  # the experiment whose variant served (config/experiments.yaml)
VARIANT = "gateway.variant"
STREAM = "gateway.stream"  # "true" | "false"
TTFT_MS = "gateway.ttft_ms"  # time to first streamed byte, milliseconds
RETRIES = "gateway.retries"
FALLBACKS = "gateway.fallbacks"

# Image generation (operation "images"); the span's own duration is the generation time
IMAGES_COUNT = "gateway.images.count"  # images produced (requested, when the job failed)
IMAGES_STEPS = "gateway.images.steps"  # sampler steps per image
IMAGES_SIZE = "gateway.images.size"  # "WIDTHxHEIGHT"
IMAGES_WORKFLOW = "gateway.images.workflow"  # the workflow name from config/comfyui/workflows.yaml

# Operation-specific figures: what LiteLLM prices audio, rerank and embeddings by
EMBEDDING_INPUTS = "gateway.embeddings.inputs"  # inputs in one embeddings request
SPEECH_CHARACTERS = "gateway.audio.characters"  # text to speech: characters that are not whitespace
AUDIO_SECONDS = "gateway.audio.seconds"  # speech to text: the audio's duration
SEARCH_UNITS = "gateway.rerank.search_units"  # rerank: the provider's billed search units
