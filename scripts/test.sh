#!/usr/bin/env bash
# Installs what the tests need and runs them. Exit status is pytest's.
#   scripts/test.sh                 all suites
#   scripts/test.sh -k streaming    extra arguments go to pytest
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_bff_venv
ensure_litellm_venv
ensure_monitoring_assets || die "could not install the monitoring assets (npm ci in backend/bff/monitoring)"
ensure_chromium || die "could not install chromium and chromium-driver (apt-get)"

mkdir -p "$ROOT/tests/output"
cd "$ROOT/tests"
export LITELLM_BIN="$LITELLM_VENV/bin/litellm"
set +e
"$BFF_VENV/bin/python" -m pytest "$@"
status=$?
set -e
exit $status
