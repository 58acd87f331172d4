#!/usr/bin/env bash
# Checks a running stack end to end (scripts/integration_check.py): every service's health,
# a chat and a streamed chat with a token, their spans in ClickHouse and in the usage API,
# and the monitoring page. Exits non-zero on the first failed check.
#
#   scripts/test-integration.sh                   the compose stack (default), through Kong
#   scripts/test-integration.sh --local           the stack of scripts/dev.sh, already running
#   scripts/test-integration.sh --local --start   starts scripts/dev.sh on free ports with a
#                                                 fresh temporary DATA_DIR, checks it, stops it
#   --model NAME                                  the model to chat with (default mock-mini)
#
# Compose needs LITELLM_CONFIG_FILE=litellm.dev.yaml in .env (mock models) and an Open-WebUI
# admin's sign-in in INTEGRATION_ADMIN_EMAIL / INTEGRATION_ADMIN_PASSWORD (environment or .env;
# a fresh Open-WebUI gets this account as its first admin).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

START_TIMEOUT=90  # seconds for a started local stack to become ready (LiteLLM takes ~10 s)
STOP_TIMEOUT=15   # seconds for it to stop on SIGTERM before it is killed

usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit "${1:-0}"; }

mode=compose start=false model=mock-mini
while [ $# -gt 0 ]; do
  case "$1" in
    --compose) mode=compose ;;
    --local) mode=local ;;
    --start) start=true ;;
    --model) [ $# -ge 2 ] || die "--model needs a name"; model="$2"; shift ;;
    -h|--help) usage ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
  shift
done
[ "$start" = false ] || [ "$mode" = local ] || die "--start only works with --local (start compose with 'docker compose up -d')"

ensure_bff_venv
check() { "$BFF_VENV/bin/python" "$ROOT/scripts/integration_check.py" --mode "$mode" --model "$model"; }

if [ "$mode" = compose ]; then
  # Fail fast and say why when compose cannot run here, instead of timing out in the checks.
  docker compose version >/dev/null 2>&1 || die "'docker compose' is not available: install Docker with the compose plugin, or use --local"
  timeout 10 docker info >/dev/null 2>&1 || die "'docker compose' cannot reach a Docker engine: start Docker, or use --local [--start]"
  check
  exit
fi

if [ "$start" = false ]; then
  check
  exit
fi

# --- --local --start: a throwaway local stack -----------------------------------------
# Install first, so that the bounded wait below covers only the start-up (dev.sh's own calls are then no-ops).
ensure_litellm_venv
ensure_monitoring_assets || log "the monitoring pages will show no charts until 'npm ci' succeeds in backend/bff/monitoring"
DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/llm-gateway-it.XXXXXX")"
mkdir -p "$DATA_DIR/logs"
stack_pid=""

# Prints a file's tail without anything that looks like a token or key (dev.sh prints tokens).
show_tail() {
  [ -f "$1" ] || return 0
  printf '\n--- last %s lines of %s ---\n' "$2" "$(basename "$1")" >&2
  tail -n "$2" "$1" | sed -E 's/eyJ[A-Za-z0-9._-]+/<token>/g; s/(sk|svc)-[A-Za-z0-9]{8,}/\1-<redacted>/g' >&2
}

finish() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$stack_pid" ]; then
    # dev.sh runs in its own process group (setsid): stop the group, LiteLLM and the BFF with it.
    kill -TERM -- "-$stack_pid" 2>/dev/null || true  # the group may have exited already
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 -- "-$stack_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -KILL -- "-$stack_pid" 2>/dev/null || true
    log "stopped the local stack; ${SECONDS} s in all"
  fi
  if [ "$status" -ne 0 ]; then
    show_tail "$DATA_DIR/logs/dev.log" 15
    show_tail "$DATA_DIR/logs/litellm.log" 30
    show_tail "$DATA_DIR/logs/bff.log" 30
  fi
  rm -rf "$DATA_DIR"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BFF_PORT="$(free_port)"
LITELLM_PORT="$(free_port)"
[ "$BFF_PORT" != "$LITELLM_PORT" ] || LITELLM_PORT="$(free_port)"
export BFF_PORT LITELLM_PORT DATA_DIR
# A hermetic stack: no .env (it may point at compose), its own store and media, static dev users.
export ENV_FILE="" CLICKHOUSE_URL="chdb://$DATA_DIR/clickhouse" MEDIA_DIR="$DATA_DIR/media"
export ROLE_SOURCE=static BFF_DEV_MODE=true
unset OTEL_EXPORTER_OTLP_ENDPOINT LITELLM_CONFIG

log "starting the local stack (BFF :$BFF_PORT, LiteLLM :$LITELLM_PORT, data in $DATA_DIR)"
setsid "$ROOT/scripts/dev.sh" > "$DATA_DIR/logs/dev.log" 2>&1 < /dev/null &
stack_pid=$!
wait_for_http "http://127.0.0.1:$BFF_PORT/health/ready" "$START_TIMEOUT" BFF "$stack_pid" \
  || die "the local stack did not become ready within ${START_TIMEOUT} s"
log "stack ready after ${SECONDS} s"
check
