#!/usr/bin/env python3
"""Prints, as a sorted JSON list, the chat-body keys the installed LiteLLM treats as its own.

    .venv-litellm/bin/python scripts/litellm_body_fields.py

Run it with the LiteLLM venv's python (it imports litellm). The output is deterministic
for one installed LiteLLM; compare it with backend/bff/upstream/litellm_fields.py:
`set(output) - OPENAI_CHAT_FIELDS == REFUSED_BODY_FIELDS`. The only keys of OpenAI's own
chat schema it contains are ones LiteLLM also reads (1.106.0: `metadata`).

Derivation (LiteLLM 1.106.0; paths relative to site-packages/litellm):

 1. types/utils.py `all_litellm_params`: LiteLLM's own kwarg registry (connection,
    routing, caching, cost, observability, guardrail, prompt, mock and internal-state
    fields of types/litellm_params.py, the callback params, the custom-pricing fields),
    minus the `KWARG_ARTIFACTS` that are not request keys (`self`, `use_client`,
    `model_config`; `rust` stays, the proxy bans it).
 2. types/router.py `GenericLiteLLMParams`: a deployment's `litellm_params`.
    Router._acompletion calls `litellm.acompletion(**{**deployment litellm_params, ...,
    **request kwargs})`, so a body key of that name overrides the deployment's value.
 3. `CredentialLiteLLMParams`, router_utils/clientside_credential_handler.py
    `clientside_credential_keys` and `_ADMIN_CONFIG_FIELDS_TO_CLEAR_ON_BASE_OVERRIDE`.
 4. proxy/auth/auth_utils.py `_BANNED_REQUEST_BODY_PARAMS` (400/500 unless an admin
    opts in), `_NESTED_CONFIG_KEYS`, `_FALLBACK_FIELDS`.
 5. proxy/litellm_pre_call_utils.py `_UNTRUSTED_ROOT_CONTROL_FIELDS` (silently
    stripped) and `_CLIENT_MOCK_CONTROL_FIELDS`.
 6. proxy/route_llm_request.py `GATED_MOCK_PARAM_NAMES` (400 unless
    `dangerously_allow_mock_testing_request_params`) and types/router.py
    `MockRouterTestingParams`.
 7. router_utils/fallback_event_handlers.py `_PER_REQUEST_FALLBACK_CONTROL_KEYS`.
 8. `Router.__init__` parameters that router.py reads back from request kwargs
    (`kwargs.get("name"...)` / `kwargs.pop("name"...)`): per-request overrides of
    router_settings (fallbacks, num_retries, timeout, routing_strategy, ...).
 9. `litellm.completion()` parameters outside OpenAI's chat schema, except provider
    parameters LiteLLM only translates for the provider (`thinking`,
    `include_server_side_tool_invocations`).
10. litellm_core_utils/initialize_dynamic_callback_params.py `_supported_callback_params`
    and `_request_blocked_callback_params`.
11. `BODY_KEYS_READ_BY_NAME`: keys the proxy or router read from the body by name that
    none of the lists above holds (file:line in the comments).
"""

import inspect
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map

# The OpenAI chat completion request fields (kept equal to bff.upstream.litellm_fields.OPENAI_CHAT_FIELDS).
OPENAI_CHAT_FIELDS = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions",
        "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata",
        "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
        "service_tier", "stop", "store", "stream", "stream_options", "temperature",
        "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip

# litellm.completion() parameters that are model parameters LiteLLM translates, not LiteLLM controls.
PROVIDER_PARAMS = frozenset({"thinking", "include_server_side_tool_invocations", "kwargs"})

BODY_KEYS_READ_BY_NAME = frozenset(
    {
        "router_settings_override",  # proxy/route_llm_request.py:664 merges it into the router kwargs
        "user_config",  # proxy/route_llm_request.py:661 builds a throwaway Router from it (also banned)
        "litellm_params",  # proxy/auth/auth_utils.py:634 checks it as a LiteLLM params container
        "disable_fallbacks",  # router.py:7897 kwargs.pop("disable_fallbacks")
        "max_fallbacks",  # router.py:7635 only defaulted when absent; fallback_event_handlers.py:712
        "include_fallback_errors",  # router.py:7896; kept only with general_settings.expose_fallback_errors_to_caller
        "specific_deployment",  # router.py:3855 kwargs.pop("specific_deployment")
        "priority",  # router.py:2938 sends the call through the scheduler queue
        "tags",  # proxy/litellm_pre_call_utils.py:1971 tag routing and spend attribution
        "guardrails",  # proxy/litellm_pre_call_utils.py:3320
        "guardrail_config",  # proxy/litellm_pre_call_utils.py:3329
        "policies",  # proxy/litellm_pre_call_utils.py:3289
        "include_guardrail_response",  # proxy/litellm_pre_call_utils.py:3278
        "success_callback",  # utils.py:1094 function_setup registers per-request callbacks
        "failure_callback",  # utils.py:1109
        "drop_params",  # main.py:5712
        "additional_drop_params",  # main.py:5665
        "mock_delay",  # main.py:661
        "litellm_metadata",  # proxy/litellm_pre_call_utils.py:2408 merged into metadata
    }
)

_KWARG_READ = re.compile(r"kwargs\.(?:get|pop)\(\s*\"([\w-]+)\"")


def litellm_body_fields() -> frozenset[str]:
    import litellm
    from litellm.litellm_core_utils import initialize_dynamic_callback_params as callback_params
    from litellm.proxy import litellm_pre_call_utils as pre_call
    from litellm.proxy import route_llm_request
    from litellm.proxy.auth import auth_utils
    from litellm.router import Router
    from litellm.router_utils import clientside_credential_handler as clientside
    from litellm.router_utils import fallback_event_handlers
    from litellm.types.litellm_params import KWARG_ARTIFACTS
    from litellm.types.router import CredentialLiteLLMParams, GenericLiteLLMParams, MockRouterTestingParams
    from litellm.types.utils import all_litellm_params

    banned = frozenset(auth_utils._BANNED_REQUEST_BODY_PARAMS)
    router_source = Path(inspect.getfile(Router)).read_text(encoding="utf-8")
    read_from_request = frozenset(_KWARG_READ.findall(router_source))
    sources: list[frozenset[str]] = [
        frozenset(all_litellm_params) - (frozenset(KWARG_ARTIFACTS) - banned),  # 1
        frozenset(GenericLiteLLMParams.model_fields),  # 2
        frozenset(CredentialLiteLLMParams.model_fields),  # 3
        frozenset(clientside.clientside_credential_keys),
        frozenset(clientside._ADMIN_CONFIG_FIELDS_TO_CLEAR_ON_BASE_OVERRIDE),
        banned,  # 4
        frozenset(auth_utils._NESTED_CONFIG_KEYS),
        frozenset(auth_utils._FALLBACK_FIELDS),
        frozenset(pre_call._UNTRUSTED_ROOT_CONTROL_FIELDS),  # 5
        frozenset(pre_call._CLIENT_MOCK_CONTROL_FIELDS),
        frozenset(route_llm_request.GATED_MOCK_PARAM_NAMES),  # 6
        frozenset(MockRouterTestingParams.__dataclass_fields__),
        frozenset(fallback_event_handlers._PER_REQUEST_FALLBACK_CONTROL_KEYS),  # 7
        frozenset(inspect.signature(Router.__init__).parameters) & read_from_request,  # 8
        frozenset(inspect.signature(litellm.completion).parameters) - OPENAI_CHAT_FIELDS - PROVIDER_PARAMS,  # 9
        frozenset(callback_params._supported_callback_params),  # 10
        frozenset(callback_params._request_blocked_callback_params),
        BODY_KEYS_READ_BY_NAME,  # 11
    ]
    return frozenset().union(*sources)


def main() -> None:
    json.dump(sorted(litellm_body_fields()), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
