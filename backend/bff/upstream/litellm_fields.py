"""LiteLLM's own request-body keys: the chat-body fields that steer LiteLLM rather than the model.

A body sent to the LiteLLM proxy's /v1/chat/completions is handed to the router and then
to `litellm.acompletion`, which reads many keys beyond OpenAI's schema as instructions to
LiteLLM itself: which deployment or provider to use, fallback lists, retry counts,
timeouts, provider credentials and endpoints, per-request prices, cache controls,
logging callbacks and their credentials, mock responses, guardrails, budgets and the
proxy's own auth context. Request values override the proxy's configuration (the router
builds each call as `{**deployment litellm_params, **request kwargs}`), so the gateway
refuses them from clients and sets the few it needs itself.

Where the list comes from: `scripts/litellm_body_fields.py`, run with the LiteLLM venv's
python, prints the keys the installed LiteLLM (1.106.0) treats as its own, derived from
LiteLLM's lists and signatures (`litellm.types.utils.all_litellm_params`, the deployment
`GenericLiteLLMParams` and `CredentialLiteLLMParams`, the proxy's banned and stripped body
keys, the router's per-request overrides, the mock-testing params, the callback params;
its docstring has the full derivation). REFUSED_BODY_FIELDS is that output minus
OPENAI_CHAT_FIELDS: a key of OpenAI's own chat schema is never refused here even when
LiteLLM also reads it (`metadata` carries LiteLLM tags and trace ids; `user` and
`safety_identifier` name the end user), the gateway overwrites or filters those instead.
Keys starting with REFUSED_BODY_FIELD_PREFIX are LiteLLM-internal (types/utils.py
`is_litellm_owned_kwarg`) and refused as well.

REASONS names each field's concern in a word ("routing", "fallbacks", "retries",
"timeouts", "credentials", "pricing", "caching", "logging", "mocking", "guardrails",
"budgets", "identity"); "routing" also covers how LiteLLM shapes the provider call
(provider choice, prompt templates, parameter dropping, response post-processing).
This module does not import litellm: the BFF's environment does not have it.
"""

OPENAI_CHAT_FIELDS: frozenset[str] = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort",
        "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
        "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)
"""OpenAI's chat completion request fields."""

REFUSED_BODY_FIELD_PREFIX = "_litellm_"
"""LiteLLM's internal kwarg prefix (constants.py INTERNAL_KWARG_PREFIX)."""

_BY_CONCERN: dict[str, tuple[str, ...]] = {
    # which deployment, provider, router or prompt template serves the call, and how the call is shaped
    "routing": (
        "_agentic_loop_api_surface", "_agentic_loop_depth", "_agentic_loop_fingerprints",
        "_code_interpreter_interception_active", "_code_interpreter_interception_converted_stream",
        "_code_interpreter_interception_sandbox_key", "_code_interpreter_interception_session_scoped",
        "_context_compaction_state", "_headroom_interception_converted_stream",
        "_litellm_addressed_response_id", "_router_weights", "_target_order",
        "_websearch_interception_converted_stream", "_websearch_interception_emit_native_blocks",
        "acompletion", "adaptive_router_config", "adaptive_router_default_model", "additional_drop_params",
        "aembedding", "aimg_generation", "allm_passthrough_route", "allowed_model_region",
        "allowed_openai_params", "assistant_continue_message", "async_call", "atext_completion",
        "auto_router_config", "auto_router_config_path", "auto_router_default_model",
        "auto_router_embedding_model", "auto_router_max_input_chars", "auto_router_model_compression",
        "auto_router_routing_compression", "azure", "bos_token", "complete_response",
        "complexity_router_config", "complexity_router_default_model", "custom_llm_provider",
        "custom_prompt_dict", "data_residency", "deployment_id", "disable_add_transform_inline_image_block",
        "drop_params", "enable_json_schema_validation", "enable_tag_filtering", "ensure_alternating_roles",
        "eos_token", "fastest_response", "final_prompt_value", "hf_model_name", "litellm_params",
        "litellm_system_prompt", "merge_reasoning_content_in_choices", "milvus_db_name",
        "milvus_partition_names", "milvus_text_field", "model_alias_map", "model_file_id_mapping",
        "model_list", "order", "priority", "prompt_environment", "prompt_id", "prompt_label",
        "prompt_variables", "prompt_version", "provider_affinity_header", "quality_router_config",
        "quality_router_default_model", "roles", "router_settings_override", "routing_decision",
        "routing_groups", "routing_strategy", "routing_strategy_args", "rust", "search_tool_name",
        "silent_model", "specific_deployment", "stream_chunk_size", "stream_response",
        "supports_system_message", "tag_regex", "tags", "text_completion", "use_chat_completions_api",
        "use_in_pass_through", "use_litellm_proxy", "user_config", "user_continue_message",
        "valkey_embedding_field", "valkey_text_field", "vector_store_id", "weight", "weights",
    ),
    # router fallbacks: request values replace router_settings.fallbacks (router.py:7899)
    "fallbacks": (
        "attempted_targets", "content_policy_fallbacks", "context_window_fallback_dict",
        "context_window_fallbacks", "disable_fallbacks", "fallback_depth", "fallbacks",
        "include_fallback_errors", "max_fallbacks",
    ),
    # retry counts and policies, deployment cooldown
    "retries": (
        "cooldown_time", "max_retries", "model_group_retry_policy", "num_retries", "retry_policy",
        "retry_strategy",
    ),
    # per-attempt and stream timeouts, SSE keep-alive
    "timeouts": (
        "allow_client_keepalive_override", "client_side_timeout", "force_timeout", "keepalive_seconds",
        "request_timeout", "stream_timeout", "timeout",
    ),
    # provider keys, endpoints, cloud identities, and headers/bodies sent to the provider
    "credentials": (
        "agentcore_runtime_session_id", "anthropic-workspace-id",
        "anthropic_disable_workload_identity_federation", "anthropic_federation_rule_id",
        "anthropic_federation_workspace_id", "anthropic_identity_source", "anthropic_identity_token",
        "anthropic_identity_token_file", "anthropic_issuer_audience", "anthropic_issuer_signing_key_ref",
        "anthropic_issuer_subject", "anthropic_issuer_ttl_seconds", "anthropic_issuer_url",
        "anthropic_keycloak_auth_method", "anthropic_keycloak_client_id",
        "anthropic_keycloak_client_secret_ref", "anthropic_keycloak_scope", "anthropic_keycloak_token_url",
        "anthropic_organization_id", "anthropic_service_account_id", "anthropic_workspace_id", "api_base",
        "api_key", "api_type", "api_version", "aws_access_key_id", "aws_batch_role_arn",
        "aws_bedrock_project_id", "aws_bedrock_runtime_endpoint", "aws_external_id", "aws_profile_name",
        "aws_region_name", "aws_role_name", "aws_secret_access_key", "aws_session_name", "aws_session_tags",
        "aws_session_token", "aws_sts_endpoint", "aws_web_identity_token", "aws_workspace_id",
        "azure_ad_token", "azure_ad_token_provider", "azure_password", "azure_scope", "azure_username",
        "base_url", "bedrock_tags", "bucket_name", "client", "client_id", "client_secret",
        "configurable_clientside_auth_params", "default_headers", "deployment_url", "extra_body",
        "extra_headers", "headers", "litellm_credential_name", "litellm_embedding_config", "nvcf_function_id",
        "oci_fingerprint", "oci_key", "oci_key_file", "oci_signer", "oci_tenancy", "oci_user",
        "openai_identity_provider_id", "openai_identity_token_file", "openai_service_account_id",
        "organization", "provider_specific_header", "region_name", "s3_access_key_id", "s3_bucket_name",
        "s3_bucket_owner", "s3_encryption_key_id", "s3_endpoint_url", "s3_output_bucket_name",
        "s3_region_name", "s3_secret_access_key", "sagemaker_base_url", "shared_session", "ssl_verify",
        "tenant_id", "use_ssl", "use_xai_oauth", "valkey_host", "valkey_password", "valkey_port",
        "valkey_ssl", "vertex_ai_credentials", "vertex_credentials", "vertex_location", "vertex_project",
        "watsonx_region_name", "workspace_id",
    ),
    # per-request prices (proxy strips or bans them; litellm.completion registers them)
    "pricing": (
        "annotation_cost_per_page", "annotation_cost_per_page_batches", "base_model",
        "cache_creation_input_audio_token_cost", "cache_creation_input_token_cost",
        "cache_creation_input_token_cost_above_100k_tokens",
        "cache_creation_input_token_cost_above_100k_tokens_batches",
        "cache_creation_input_token_cost_above_1hr",
        "cache_creation_input_token_cost_above_1hr_above_100k_tokens",
        "cache_creation_input_token_cost_above_200k_tokens",
        "cache_creation_input_token_cost_above_200k_tokens_batches",
        "cache_creation_input_token_cost_above_272k_tokens",
        "cache_creation_input_token_cost_above_272k_tokens_batches",
        "cache_creation_input_token_cost_above_272k_tokens_flex",
        "cache_creation_input_token_cost_above_272k_tokens_priority",
        "cache_creation_input_token_cost_above_272k_tokens_ultrafast",
        "cache_creation_input_token_cost_batches", "cache_creation_input_token_cost_flex",
        "cache_creation_input_token_cost_priority", "cache_creation_input_token_cost_ultrafast",
        "cache_read_input_audio_token_cost", "cache_read_input_image_token_cost",
        "cache_read_input_token_cost", "cache_read_input_token_cost_above_100k_tokens",
        "cache_read_input_token_cost_above_100k_tokens_batches",
        "cache_read_input_token_cost_above_200k_tokens",
        "cache_read_input_token_cost_above_200k_tokens_batches",
        "cache_read_input_token_cost_above_200k_tokens_priority",
        "cache_read_input_token_cost_above_272k_tokens",
        "cache_read_input_token_cost_above_272k_tokens_batches",
        "cache_read_input_token_cost_above_272k_tokens_flex",
        "cache_read_input_token_cost_above_272k_tokens_priority",
        "cache_read_input_token_cost_above_272k_tokens_ultrafast",
        "cache_read_input_token_cost_above_512k_tokens", "cache_read_input_token_cost_balanced",
        "cache_read_input_token_cost_batches", "cache_read_input_token_cost_flex",
        "cache_read_input_token_cost_priority", "cache_read_input_token_cost_ultrafast",
        "citation_cost_per_token", "cost_per_query", "cost_per_second",
        "google_maps_grounding_cost_per_query", "input_cost_per_audio_per_second",
        "input_cost_per_audio_per_second_above_128k_tokens", "input_cost_per_audio_token",
        "input_cost_per_audio_token_batches", "input_cost_per_character",
        "input_cost_per_character_above_128k_tokens", "input_cost_per_image",
        "input_cost_per_image_above_128k_tokens", "input_cost_per_image_token",
        "input_cost_per_image_token_batches", "input_cost_per_pixel", "input_cost_per_query",
        "input_cost_per_second", "input_cost_per_token", "input_cost_per_token_above_100k_tokens",
        "input_cost_per_token_above_100k_tokens_batches", "input_cost_per_token_above_128k_tokens",
        "input_cost_per_token_above_200k_tokens", "input_cost_per_token_above_200k_tokens_batches",
        "input_cost_per_token_above_200k_tokens_priority", "input_cost_per_token_above_272k_tokens",
        "input_cost_per_token_above_272k_tokens_batches", "input_cost_per_token_above_272k_tokens_flex",
        "input_cost_per_token_above_272k_tokens_priority", "input_cost_per_token_above_272k_tokens_ultrafast",
        "input_cost_per_token_above_512k_tokens", "input_cost_per_token_balanced",
        "input_cost_per_token_batches", "input_cost_per_token_cache_hit", "input_cost_per_token_flex",
        "input_cost_per_token_priority", "input_cost_per_token_ultrafast", "input_cost_per_video_per_second",
        "input_cost_per_video_per_second_above_128k_tokens",
        "input_cost_per_video_per_second_above_15s_interval",
        "input_cost_per_video_per_second_above_8s_interval", "input_cost_per_video_token",
        "input_cost_per_video_token_batches", "model_info", "ocr_cost_per_credit", "ocr_cost_per_page",
        "ocr_cost_per_page_batches", "output_cost_per_audio_per_second", "output_cost_per_audio_token",
        "output_cost_per_character", "output_cost_per_character_above_128k_tokens", "output_cost_per_image",
        "output_cost_per_image_1024", "output_cost_per_image_1536", "output_cost_per_image_512",
        "output_cost_per_image_token", "output_cost_per_image_token_batches", "output_cost_per_pixel",
        "output_cost_per_reasoning_token", "output_cost_per_reasoning_token_flex",
        "output_cost_per_reasoning_token_priority", "output_cost_per_second", "output_cost_per_second_1080p",
        "output_cost_per_second_2k", "output_cost_per_second_480p", "output_cost_per_second_4k",
        "output_cost_per_second_720p", "output_cost_per_second_768p", "output_cost_per_token",
        "output_cost_per_token_above_100k_tokens", "output_cost_per_token_above_100k_tokens_batches",
        "output_cost_per_token_above_128k_tokens", "output_cost_per_token_above_200k_tokens",
        "output_cost_per_token_above_200k_tokens_batches", "output_cost_per_token_above_200k_tokens_priority",
        "output_cost_per_token_above_272k_tokens", "output_cost_per_token_above_272k_tokens_batches",
        "output_cost_per_token_above_272k_tokens_flex", "output_cost_per_token_above_272k_tokens_priority",
        "output_cost_per_token_above_272k_tokens_ultrafast", "output_cost_per_token_above_512k_tokens",
        "output_cost_per_token_balanced", "output_cost_per_token_batches", "output_cost_per_token_flex",
        "output_cost_per_token_priority", "output_cost_per_token_ultrafast",
        "output_cost_per_video_per_second", "output_cost_per_video_token", "output_vector_size",
        "regional_endpoint_uplift_multiplier", "regional_processing_uplift_multiplier_eu",
        "regional_processing_uplift_multiplier_us", "search_context_cost_per_query", "tiered_pricing",
    ),
    # response cache controls
    "caching": (
        "cache", "cache_key", "caching", "caching_groups", "enable_prompt_caching",
        "litellm_gateway_injected_cache", "preset_cache_key", "ttl",
    ),
    # callbacks, observability destinations and their credentials, call/trace ids
    "logging": (
        "_litellm_strip_stream_usage", "arize_api_key", "arize_error_sampling_rate", "arize_otlp_protocol",
        "arize_space_id", "arize_space_key", "arize_success_sampling_rate", "braintrust_api_key",
        "braintrust_host", "braintrust_project", "callbacks", "completion_call_id", "dd_agent_host",
        "dd_agent_port", "dd_api_key", "dd_site", "failure_callback", "gcs_bucket_name",
        "gcs_path_service_account", "humanloop_api_key", "id", "langfuse_environment", "langfuse_host",
        "langfuse_prompt_version", "langfuse_public_key", "langfuse_secret", "langfuse_secret_key",
        "langfuse_span_scope", "langsmith_api_key", "langsmith_base_url", "langsmith_project",
        "langsmith_sampling_rate", "langsmith_tenant_id", "litellm_call_id", "litellm_disabled_callbacks",
        "litellm_logging_obj", "litellm_request_debug", "litellm_session_id", "litellm_trace_id",
        "litellm_trusted_callback_vars", "log_client_error_tracebacks", "logger_fn", "lunary_public_key",
        "newrelic_api_key", "newrelic_region", "no-log", "posthog_api_key", "posthog_api_url", "posthog_host",
        "service_callback", "signoz_ingestion_endpoint", "signoz_ingestion_key", "slack_webhook_url",
        "standard_logging_object", "success_callback", "turn_off_message_logging", "verbose", "wandb_api_key",
        "weave_project_id",
    ),
    # fake responses and injected failures
    "mocking": (
        "mock_delay", "mock_response", "mock_testing_content_policy_fallbacks",
        "mock_testing_context_fallbacks", "mock_testing_fallbacks", "mock_testing_rate_limit_error",
        "mock_timeout", "mock_tool_calls",
    ),
    # which guardrails run, opting out of global ones, guardrail verdicts
    "guardrails": (
        "_guardrail_pipelines", "_pipeline_managed_guardrails", "applied_guardrails", "applied_policies",
        "disable_global_guardrail", "disable_global_guardrails", "guardrail_config", "guardrail_scan_ids",
        "guardrail_scan_metadata", "guardrails", "include_guardrail_response", "opted_out_global_guardrails",
        "pillar_response_headers", "policies", "policy_sources",
    ),
    # budgets and rate limits, agentic-loop ceilings
    "budgets": (
        "budget_duration", "default_api_key_rpm_limit", "default_api_key_tpm_limit", "itpm",
        "max_agentic_loops", "max_budget", "max_file_size_mb", "max_parallel_requests", "otpm", "rpm", "tpm",
    ),
    # proxy-owned request/auth context and end-user attribution
    "identity": (
        "fireworks_forward_user_id", "litellm_metadata", "proxy_server_request", "secret_fields",
        "user_api_key_auth_metadata",
    ),
}

REASONS: dict[str, str] = {field: concern for concern, fields in _BY_CONCERN.items() for field in fields}
"""Each refused field -> the concern it steers, in one word."""

REFUSED_BODY_FIELDS: frozenset[str] = frozenset(REASONS)
"""Every chat-body key that steers LiteLLM and is not in OPENAI_CHAT_FIELDS."""
