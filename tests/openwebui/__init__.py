"""The opt-in suite against a real Open-WebUI (scripts/test.sh --openwebui).

A package so that its conftest imports as `openwebui.conftest` and never replaces
the top-level `conftest` module the other suites import from.
"""
