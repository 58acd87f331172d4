#!/usr/bin/env bash
# Static checks CI runs before the tests: ruff (backend, scripts, tests) and mypy --strict (backend/bff).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_bff_venv
cd "$ROOT"
log "ruff"
"$BFF_VENV/bin/ruff" check --config backend/pyproject.toml backend/bff scripts tests webui-integration
log "mypy --strict (backend/bff)"
(cd backend && "$BFF_VENV/bin/mypy")
