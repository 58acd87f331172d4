"""LLM gateway BFF: Open-WebUI identity and policy in front of a LiteLLM proxy."""
