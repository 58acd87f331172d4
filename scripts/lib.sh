# Shared helpers for scripts/*.sh: virtual environments that install themselves.
# Sourced, not run. Each venv is (re)installed only when its pinned inputs change.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BFF_VENV="$ROOT/.venv"
LITELLM_VENV="$ROOT/.venv-litellm"

log() { printf '\033[1;34m[%s]\033[0m %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '\033[1;31m[%s] %s\033[0m\n' "$(basename "$0")" "$*" >&2; exit 1; }

# ensure_venv DIR STAMP_INPUTS... -- PIP_ARGS...
ensure_venv() {
  local dir="$1"; shift
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local want; want="$(cat "${inputs[@]}" | sha256sum | cut -c1-16)"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then
    return 0
  fi
  log "installing into ${dir#$ROOT/} (first run or changed pins)"
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir" || die "cannot create $dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" || die "pip install failed for $dir"
  echo "$want" > "$dir/.installed"
}

ensure_bff_venv() {
  ensure_venv "$BFF_VENV" "$ROOT/backend/pyproject.toml" "$ROOT/backend/constraints.txt" -- \
    -c "$ROOT/backend/constraints.txt" -e "$ROOT/backend[test]"
}

MONITORING_DIR="$ROOT/backend/bff/monitoring"

# Chart.js for the monitoring pages and Swagger UI for /docs, exactly as pinned in
# backend/bff/monitoring/package-lock.json.
ensure_monitoring_assets() {
  local stamp="$MONITORING_DIR/node_modules/.installed"
  local want; want="$(sha256sum < "$MONITORING_DIR/package-lock.json" | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  command -v npm >/dev/null || { log "npm not found: install Node.js 20+ for the monitoring charts and /docs"; return 1; }
  log "installing the browser assets: Chart.js, Swagger UI (npm ci)"
  (cd "$MONITORING_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) || return 1
  echo "$want" > "$stamp"
}

# Debian's Chromium and its matching chromedriver, for the browser tests.
ensure_chromium() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  log "installing chromium and chromium-driver (apt-get)"
  $sudo apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver > /dev/null || return 1
}

# Debian's docker-compose (v1) and decK: they validate docker-compose.yml and config/kong.yml
# without a Docker engine or a Kong.
ensure_deploy_tools() {
  if command -v docker-compose >/dev/null && command -v deck >/dev/null; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  log "installing docker-compose and deck (apt-get)"
  $sudo apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose=1.29.2-3 deck=1.4.0-1+b12 > /dev/null || return 1
}

# Debian's Redis server 7.0 (bookworm): the tests start their own on loopback (shared state of
# replicas). Not pinned to a Debian revision: security updates replace it in the archive.
ensure_redis_server() {
  if command -v redis-server >/dev/null; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  log "installing redis-server (apt-get)"
  $sudo apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server > /dev/null || return 1
}

ensure_litellm_venv() {
  ensure_venv "$LITELLM_VENV" "$ROOT/scripts/litellm-requirements.txt" -- \
    -r "$ROOT/scripts/litellm-requirements.txt"
}

# wait_for_http URL SECONDS NAME [PID]: polls until URL answers 200, or fails early if PID dies.
wait_for_http() {
  local url="$1" seconds="$2" name="$3" pid="${4:-}"
  local deadline=$((SECONDS + seconds))
  while [ $SECONDS -lt $deadline ]; do
    if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; then
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.5
  done
  return 1
}

OPENWEBUI_VENV="$ROOT/.venv-openwebui"

# Open-WebUI for the opt-in end-to-end suite (scripts/test.sh --openwebui), in its own venv
# because it pins its own FastAPI and pulls ML packages. Every package is pinned, torch to
# the CPU build (2.13.0+cpu, a local wheel on these machines), so nothing CUDA is resolved.
ensure_openwebui_venv() {
  ensure_venv "$OPENWEBUI_VENV" "$ROOT/scripts/openwebui-requirements.txt" -- \
    -r "$ROOT/scripts/openwebui-requirements.txt"
}
