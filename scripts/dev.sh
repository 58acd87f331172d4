#!/usr/bin/env bash
# The local stack, no Docker: a loopback mock provider (scripts/mock_provider.py), the
# LiteLLM proxy (config/litellm.dev.yaml, mock models that need no provider keys) and the
# BFF (static dev users). Ctrl-C stops everything.
#
#   scripts/dev.sh                     BFF on :8080, LiteLLM on :4000, mock provider on a free port
#   BFF_PORT=9000 LITELLM_PORT=4100 MOCK_PROVIDER_PORT=4200 scripts/dev.sh
#   DATA_DIR=/tmp/stack scripts/dev.sh  secrets, logs, embedded ClickHouse and media there
#
# Secrets for the local stack are generated once into $DATA_DIR/dev.env (default .data/).
# Values already in the environment (or in .env at the top of the repo) take precedence.
# ENV_FILE names another file to read instead of .env; ENV_FILE= (empty) reads none.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ENV_FILE="${ENV_FILE-$ROOT/.env}"
[ -n "$ENV_FILE" ] && [ -f "$ENV_FILE" ] && { set -a; source "$ENV_FILE"; set +a; }

ensure_bff_venv
ensure_litellm_venv
ensure_monitoring_assets || log "the monitoring pages will show no charts until 'npm ci' succeeds in backend/bff/monitoring"

DATA_DIR="${DATA_DIR:-.data}"
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$ROOT/$DATA_DIR" ;; esac  # relative to the repository, as in .env
mkdir -p "$DATA_DIR/logs"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"  # absolute: the chdb:// URL and the BFF (run from $ROOT) need it
LOGS="$DATA_DIR/logs"
export DATA_DIR  # scripts/dev_token.py reads $DATA_DIR/dev.env
DEV_ENV="$DATA_DIR/dev.env"
if [ ! -f "$DEV_ENV" ]; then
  random() { "$PYTHON" -c 'import secrets, sys; print(sys.argv[1] + secrets.token_hex(24))' "$1"; }
  umask 077
  {
    echo "WEBUI_SECRET_KEY=$(random '')"
    echo "LITELLM_MASTER_KEY=$(random sk-)"
    echo "BFF_SERVICE_KEYS=$(random svc-)"
    echo "FORWARD_USER_INFO_HEADER_JWT_SECRET=$(random '')"
  } > "$DEV_ENV"
  log "generated local secrets in $DEV_ENV"
fi
while IFS='=' read -r name value; do
  [ -n "$name" ] && [ -z "${!name:-}" ] && export "$name=$value"
done < "$DEV_ENV"

export BFF_PORT="${BFF_PORT:-8080}" LITELLM_PORT="${LITELLM_PORT:-4000}"
export BFF_HOST="${BFF_HOST:-127.0.0.1}"
export LITELLM_URL="http://127.0.0.1:$LITELLM_PORT"
export ROLE_SOURCE="${ROLE_SOURCE:-static}" BFF_DEV_MODE="${BFF_DEV_MODE:-true}"
export STATIC_ROLES_FILE="${STATIC_ROLES_FILE:-$ROOT/config/dev-users.yaml}"
export POLICY_FILE="${POLICY_FILE:-$ROOT/config/policy.yaml}"
export ROUTING_FILE="${ROUTING_FILE:-$ROOT/config/routing.yaml}"
export GENERATOR_MODE="${GENERATOR_MODE:-mock}"  # tasks and images go to mock deployments: no keys, no ComfyUI
export LITELLM_LOCAL_MODEL_COST_MAP=True  # never download the price map at start-up
export CLICKHOUSE_URL="${CLICKHOUSE_URL:-chdb://$DATA_DIR/clickhouse}" MEDIA_DIR="${MEDIA_DIR:-$DATA_DIR/media}"
LITELLM_CONFIG="${LITELLM_CONFIG:-$ROOT/config/litellm.dev.yaml}"
MOCK_PROVIDER_PORT="${MOCK_PROVIDER_PORT:-0}"  # 0: a free port, chosen by the mock provider itself

pids=()
stop_all() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping"
    kill "${pids[@]}" 2>/dev/null || true  # any of them may have exited already
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_all INT TERM EXIT

# The keyless provider behind the mock models that LiteLLM's mock_response cannot serve
# (embeddings, Responses, audio, moderations, rerank, images, tool calls): it binds its port
# and writes it to a file, so that no other process can take the port in between.
port_file="$DATA_DIR/mock-provider.port"
rm -f "$port_file"
log "starting the mock provider, log in $LOGS/mock-provider.log"
"$BFF_VENV/bin/python" "$ROOT/scripts/mock_provider.py" --host 127.0.0.1 --port "$MOCK_PROVIDER_PORT" --port-file "$port_file" \
  > "$LOGS/mock-provider.log" 2>&1 &
mock_pid=$!
pids+=("$mock_pid")
deadline=$((SECONDS + 30))
until [ -s "$port_file" ]; do
  if ! kill -0 "$mock_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    tail -n 30 "$LOGS/mock-provider.log" >&2; die "the mock provider did not start"
  fi
  sleep 0.1
done
mock_port="$(cat "$port_file")"
export MOCK_PROVIDER_ROOT="http://127.0.0.1:$mock_port" MOCK_PROVIDER_URL="http://127.0.0.1:$mock_port/v1"
wait_for_http "$MOCK_PROVIDER_ROOT/health" 30 "mock provider" "$mock_pid" \
  || { tail -n 30 "$LOGS/mock-provider.log" >&2; die "the mock provider did not become ready"; }

log "starting LiteLLM on :$LITELLM_PORT ($(basename "$LITELLM_CONFIG")), log in $LOGS/litellm.log"
# LiteLLM's otel callback (config/litellm.yaml) has no collector here: its spans are off
# unless OTEL_ENDPOINT (LiteLLM's variable) names one.
litellm_otel_off=true
[ -n "${OTEL_ENDPOINT:-}" ] && litellm_otel_off=false
# Its keep-alive outlasts the BFF's pool expiry (LITELLM_POOL_KEEPALIVE_SECONDS), as in compose.
OTEL_SDK_DISABLED="$litellm_otel_off" "$LITELLM_VENV/bin/litellm" --config "$LITELLM_CONFIG" --host 127.0.0.1 --port "$LITELLM_PORT" \
  --keepalive_timeout 30 > "$LOGS/litellm.log" 2>&1 &
litellm_pid=$!
pids+=("$litellm_pid")
wait_for_http "http://127.0.0.1:$LITELLM_PORT/health/readiness" 120 LiteLLM "$litellm_pid" \
  || { tail -n 30 "$LOGS/litellm.log" >&2; die "LiteLLM did not become ready"; }

log "starting the BFF on :$BFF_PORT, log in $LOGS/bff.log"
(cd "$ROOT" && exec "$BFF_VENV/bin/python" -m bff) > "$LOGS/bff.log" 2>&1 &
bff_pid=$!
pids+=("$bff_pid")
wait_for_http "http://127.0.0.1:$BFF_PORT/health/ready" 60 BFF "$bff_pid" \
  || { tail -n 30 "$LOGS/bff.log" >&2; die "the BFF did not become ready"; }

admin_token="$("$BFF_VENV/bin/python" "$ROOT/scripts/dev_token.py" --role admin)"
user_token="$("$BFF_VENV/bin/python" "$ROOT/scripts/dev_token.py" --role user)"
cat <<INFO

  BFF        http://127.0.0.1:$BFF_PORT   (OpenAPI docs: /docs, readiness: /health/ready)
  LiteLLM    http://127.0.0.1:$LITELLM_PORT   (master key: LITELLM_MASTER_KEY in $DEV_ENV)
  Mocks      http://127.0.0.1:$mock_port/v1   (scripts/mock_provider.py, no key needed)
  Models     chat: mock-mini, mock-standard (users and admins), mock-premium (admins and the
             Open-WebUI group premium: dev-premium),
             mock-tools (calls the generate_image tool); mock-completion (legacy completions),
             mock-responses, mock-embed, mock-rerank, mock-stt, mock-tts, mock-moderation,
             mock-image-gen, mock-image-edit

  Admin token (12 h):  $admin_token
  User token  (12 h):  $user_token
  More tokens:         .venv/bin/python scripts/dev_token.py --role admin|user|pending
                       .venv/bin/python scripts/dev_token.py --user dev-premium  (group premium)

  Try it:
    curl -s http://127.0.0.1:$BFF_PORT/v1/chat/completions \\
      -H "Authorization: Bearer $user_token" -H 'Content-Type: application/json' \\
      -d '{"model": "mock-mini", "messages": [{"role": "user", "content": "Hello"}]}'

  Ctrl-C stops everything.
INFO

# Exit (and stop the others) as soon as any process ends.
wait -n "${pids[@]}"
die "a process of the local stack exited; see $LOGS/"
