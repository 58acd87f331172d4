#!/usr/bin/env bash
# Installs what the tests need and runs them: the pytest suites, then (on a full run)
# scripts/test-integration.sh against a local stack it starts. Exits non-zero on any failure.
#   scripts/test.sh                 all suites + the local integration check
#   scripts/test.sh -k streaming    extra arguments go to pytest (no integration check)
#   scripts/test.sh --openwebui     also the opt-in suite against a real Open-WebUI (or E2E_OPENWEBUI=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_bff_venv
ensure_litellm_venv
ensure_monitoring_assets || die "could not install the monitoring assets (npm ci in backend/bff/monitoring)"
ensure_chromium || die "could not install chromium and chromium-driver (apt-get)"
ensure_redis_server || die "could not install redis-server (apt-get)"
ensure_deploy_tools || die "could not install docker-compose and deck (apt-get), used to validate the compose files offline"

# --- Open-WebUI end to end (opt-in): --openwebui or E2E_OPENWEBUI=1 ---------------------
# Adds tests/openwebui (a real Open-WebUI from .venv-openwebui) to the normal suites. The
# default run never collects it: tests/pytest.ini's norecursedirs names it.
pytest_args=()
openwebui="${E2E_OPENWEBUI:-0}"
for arg in "$@"; do
  if [ "$arg" = "--openwebui" ]; then openwebui=1; else pytest_args+=("$arg"); fi
done
full_run=$(( ${#pytest_args[@]} == 0 ))
if [ "$openwebui" = 1 ]; then
  ensure_openwebui_venv
  export OPENWEBUI_BIN="$OPENWEBUI_VENV/bin/open-webui"
  # tests/pytest.ini's norecursedirs without openwebui (keep the two lists in sync)
  pytest_args+=(-o "norecursedirs=.* build dist node_modules venv")
fi
# --- end Open-WebUI ------------------------------------------------------------------------

mkdir -p "$ROOT/tests/output"
cd "$ROOT/tests"
export LITELLM_BIN="$LITELLM_VENV/bin/litellm"
set +e
"$BFF_VENV/bin/python" -m pytest "${pytest_args[@]}"
status=$?
set -e
[ $status = 0 ] || exit $status
if [ "$full_run" = 1 ]; then
  # The script operators run against their stack, here against a local stack of its own.
  "$ROOT/scripts/test-integration.sh" --local --start
fi
