#!/usr/bin/env python3
"""Checks a running gateway stack end to end; exit status 1 on the first failed check.

    .venv/bin/python scripts/integration_check.py --mode local|compose [--model mock-mini]

Usually run through scripts/test-integration.sh, which can also start a local stack.

- local: the stack of scripts/dev.sh. The BFF at 127.0.0.1:$BFF_PORT is the gateway (no
  Kong), LiteLLM at 127.0.0.1:$LITELLM_PORT; tokens are minted with scripts/dev_token.py
  from the secrets in $DATA_DIR/dev.env.
- compose: docker-compose.yml. Kong at 127.0.0.1:$GATEWAY_PORT serves Open-WebUI at / and
  the BFF at /gateway/. The admin token comes from signing in to Open-WebUI with
  INTEGRATION_ADMIN_EMAIL / INTEGRATION_ADMIN_PASSWORD (signing up when Open-WebUI has no
  user yet); the user token from a temporary user the admin adds and the run deletes.

Settings come from the environment, then from .env ($ENV_FILE; empty for none).
One line per check; tokens and keys are never printed.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
Mode = Literal["local", "compose"]
COMPOSE_SERVICES = ("kong", "bff", "litellm", "otel-collector", "clickhouse", "open-webui")
REQUEST_ID_ATTRIBUTE = "gateway.request_id"  # backend/bff/telemetry/attributes.py REQUEST_ID
SPAN_WAIT_SECONDS = 30.0  # spans are exported in batches (every SPAN_EXPORT_INTERVAL_MS, 5 s; longer via the collector)
TRACE_SERVICES = ("kong", "llm-bff", "litellm")  # services whose spans join a chat's trace in compose
OTHER_SPANS_WAIT_SECONDS = 10.0  # after the BFF's span, for Kong's and LiteLLM's
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
PROMPT = [{"role": "user", "content": "Say hello to the integration check."}]


class CheckFailed(Exception):
    pass


@dataclass
class Identity:
    token: str
    user_id: str = ""
    role: str = ""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Run:
    """What the checks share: where the stack is, who calls it, and what earlier checks saw."""

    mode: Mode
    model: str
    gateway: httpx.Client  # the BFF: local directly, compose through Kong's /gateway/
    webui: httpx.Client | None = None  # Open-WebUI through Kong (compose)
    litellm: httpx.Client | None = None  # LiteLLM directly (local)
    admin: Identity | None = None
    user: Identity | None = None
    temporary_user_id: str | None = None  # the compose user this run created
    requests_before: int = 0
    chat_usage: dict[str, Any] = field(default_factory=dict)
    chat_request_id: str = ""
    stream_usage: dict[str, Any] = field(default_factory=dict)
    stream_request_id: str = ""


# --- settings and small helpers ------------------------------------------------------


def dotenv() -> dict[str, str]:
    path = os.environ.get("ENV_FILE", str(ROOT / ".env"))
    values: dict[str, str] = {}
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            name, sep, value = line.strip().partition("=")
            if sep and not name.startswith("#"):
                values[name.removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


DOTENV = dotenv()


def setting(name: str, default: str = "") -> str:
    return os.environ.get(name) or DOTENV.get(name) or default


def describe(response: httpx.Response) -> str:
    """Status and (shortened) error body; bodies are the gateway's error shape, never a credential."""
    body = response.text.strip().replace("\n", " ")[:400] or "(empty body)"
    return f"HTTP {response.status_code} {response.request.method} {response.request.url.path}: {body}"


def expect(response: httpx.Response, status: int = 200) -> httpx.Response:
    if response.status_code != status:
        raise CheckFailed(f"expected {status}, got {describe(response)}")
    return response


def json_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CheckFailed(f"not JSON: {describe(response)}") from None


def need(identity: Identity | None) -> Identity:
    if identity is None:
        raise CheckFailed("no token: the token check did not run")
    return identity


def compose(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", "compose", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"'docker compose {args[0]}' did not answer within {timeout:.0f} s") from None


# --- health --------------------------------------------------------------------------


def check_compose_services(run: Run) -> str:
    done = compose("ps", "--all", "--format", "json")
    if done.returncode != 0:
        raise CheckFailed(f"docker compose ps failed: {done.stderr.strip()[:400]}")
    text = done.stdout.strip()
    # Older compose releases print one JSON array, newer ones one object per line.
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    states = {row.get("Service"): (row.get("State", ""), row.get("Health", "")) for row in rows}
    problems = []
    for service in COMPOSE_SERVICES:
        state, health = states.get(service, ("missing", ""))
        if state != "running" or health not in ("healthy", ""):
            problems.append(f"{service} {state}{f' ({health})' if health else ''}")
    if problems:
        raise CheckFailed(f"not running and healthy: {', '.join(problems)} (see 'docker compose ps' and 'docker compose logs')")
    return ", ".join(f"{s} {states[s][1] or 'running'}" for s in COMPOSE_SERVICES)


def check_gateway_ready(run: Run) -> str:
    response = run.gateway.get("/health/ready")
    body = json_of(response)
    down = {name: dep.get("detail") for name, dep in body.get("dependencies", {}).items() if dep.get("status") != "ok"}
    if response.status_code != 200 or body.get("status") != "ready":
        raise CheckFailed(f"status {body.get('status')!r}, down: {down or 'none'} ({describe(response)})")
    spans = body.get("spans") or {}
    exporter = f", spans pending {spans['pending']} dropped {spans['dropped']}" if spans else ", spans via OTLP"
    return "ready: " + ", ".join(f"{name} ok" for name in body["dependencies"]) + exporter


def check_litellm_ready(run: Run) -> str:
    assert run.litellm is not None
    body = json_of(expect(run.litellm.get("/health/readiness")))
    if body.get("status") != "healthy":
        raise CheckFailed(f"LiteLLM readiness says {body.get('status')!r}")
    return f"{run.litellm.base_url} healthy"


def check_webui_health(run: Run) -> str:
    assert run.webui is not None
    body = json_of(expect(run.webui.get("/health")))
    if body.get("status") is not True:
        raise CheckFailed(f"Open-WebUI /health answered {body}")
    return f"{run.webui.base_url}health ok through Kong"


# --- tokens --------------------------------------------------------------------------


def mint(role: str) -> Identity:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dev_token.py"), "--role", role],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise CheckFailed(f"scripts/dev_token.py --role {role} failed: {done.stderr.strip()}")
    return Identity(token=done.stdout.strip())


def webui_sign_in(webui: httpx.Client, email: str, password: str) -> httpx.Response:
    return webui.post("/api/v1/auths/signin", json={"email": email, "password": password})


def session_of(response: httpx.Response, who: str) -> Identity:
    body = json_of(expect(response))
    if not body.get("token"):
        # MFA or a pending account answers {"next_step": ...} instead of a session.
        raise CheckFailed(f"Open-WebUI gave {who} no session token (next step: {body.get('next_step')!r})")
    return Identity(token=body["token"], user_id=body.get("id", ""), role=body.get("role", ""))


def compose_admin(webui: httpx.Client) -> Identity:
    email, password = setting("INTEGRATION_ADMIN_EMAIL"), setting("INTEGRATION_ADMIN_PASSWORD")
    if not email or not password:
        raise CheckFailed(
            "set INTEGRATION_ADMIN_EMAIL and INTEGRATION_ADMIN_PASSWORD (environment or .env) to an Open-WebUI admin's sign-in"
        )
    response = webui_sign_in(webui, email, password)
    if response.status_code != 200:
        # The first account of a fresh Open-WebUI becomes its admin: create it when there is none.
        onboarding = json_of(expect(webui.get("/api/config"))).get("onboarding") is True
        if not onboarding:
            raise CheckFailed(f"signing in as {email} failed: {describe(response)}")
        signup = {"name": "Integration Admin", "email": email, "password": password}
        response = webui.post("/api/v1/auths/signup", json=signup)
    admin = session_of(response, email)
    if admin.role != "admin":
        raise CheckFailed(f"{email} has role {admin.role!r} in Open-WebUI, not admin")
    return admin


def compose_user(run: Run, admin: Identity) -> Identity:
    """A temporary role-user account, added by the admin and deleted at the end of the run."""
    assert run.webui is not None
    email = f"integration-{secrets.token_hex(4)}@example.com"
    password = f"It-{secrets.token_urlsafe(18)}-9a"  # passes Open-WebUI's optional password rules
    added = json_of(
        expect(
            run.webui.post(
                "/api/v1/auths/add",
                headers=admin.headers(),
                json={"name": "Integration User", "email": email, "password": password, "role": "user"},
            )
        )
    )
    run.temporary_user_id = added["id"]
    return session_of(webui_sign_in(run.webui, email, password), email)


def check_tokens(run: Run) -> str:
    if run.mode == "local":
        run.admin, run.user = mint("admin"), mint("user")
        source = "minted with scripts/dev_token.py"
    else:
        assert run.webui is not None
        run.admin = compose_admin(run.webui)
        run.user = compose_user(run, run.admin)
        source = "Open-WebUI sign-in (admin) and a temporary user"
    # The BFF must see the same identities and roles.
    for identity, role in ((run.admin, "admin"), (run.user, "user")):
        viewer = json_of(expect(run.gateway.get("/monitoring/viewer", headers=identity.headers())))
        if viewer.get("role") != role:
            raise CheckFailed(f"the gateway sees the {role} token as role {viewer.get('role')!r}")
        identity.user_id, identity.role = viewer["user_id"], viewer["role"]
    return f"admin {run.admin.user_id}, user {run.user.user_id} ({source})"


# --- chat ----------------------------------------------------------------------------


def check_models(run: Run) -> str:
    body = json_of(expect(run.gateway.get("/v1/models", headers=need(run.user).headers())))
    ids = [model["id"] for model in body.get("data", [])]
    if run.model not in ids:
        hint = (
            "set LITELLM_CONFIG_FILE=litellm.dev.yaml in .env for the mock models, then 'docker compose up -d'"
            if run.mode == "compose"
            else "scripts/dev.sh serves config/litellm.dev.yaml unless LITELLM_CONFIG says otherwise"
        )
        raise CheckFailed(f"{run.model} is not in /v1/models for a user ({', '.join(ids) or 'no models'}): {hint}")
    return f"{len(ids)} models for a user, {run.model} among them"


def usage_requests(run: Run) -> int:
    user = need(run.user)
    response = run.gateway.get("/api/usage/summary", params={"user": user.user_id}, headers=need(run.admin).headers())
    return int(json_of(expect(response))["totals"]["requests"])


def check_usage_before(run: Run) -> str:
    run.requests_before = usage_requests(run)
    return f"{run.requests_before} requests by {need(run.user).user_id} so far"


def check_chat(run: Run) -> str:
    response = run.gateway.post(
        "/v1/chat/completions", headers=need(run.user).headers(), json={"model": run.model, "messages": PROMPT}
    )
    body = json_of(expect(response))
    content = (body.get("choices") or [{}])[0].get("message", {}).get("content")
    if not content:
        raise CheckFailed(f"no message content in {json.dumps(body)[:400]}")
    run.chat_request_id = response.headers.get("x-request-id", "")
    if not run.chat_request_id:
        raise CheckFailed("no x-request-id response header")
    run.chat_usage = body.get("usage") or {}
    served_by = response.headers.get("x-litellm-model-group")
    return f"200, {len(content)} characters, request {run.chat_request_id}, served by {served_by}"


def check_stream(run: Run) -> str:
    request = {"model": run.model, "messages": PROMPT, "stream": True}
    with run.gateway.stream("POST", "/v1/chat/completions", headers=need(run.user).headers(), json=request) as response:
        if response.status_code != 200:
            response.read()
            raise CheckFailed(f"expected 200, got {describe(response)}")
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise CheckFailed(f"content-type {response.headers.get('content-type')!r}, not text/event-stream")
        run.stream_request_id = response.headers.get("x-request-id", "")
        events = [line.removeprefix("data:").strip() for line in response.iter_lines() if line.startswith("data:")]
    if not run.stream_request_id:
        raise CheckFailed("no x-request-id response header")
    if not events or events[-1] != "[DONE]":
        last = events[-1][:300] if events else "none"
        raise CheckFailed(f"the stream did not end with 'data: [DONE]' (last event: {last})")
    chunks = [json.loads(event) for event in events[:-1]]
    errors = [chunk["error"] for chunk in chunks if "error" in chunk]
    if errors:
        raise CheckFailed(f"error event in the stream: {json.dumps(errors[0])[:400]}")
    if len(chunks) < 2:
        raise CheckFailed(f"{len(chunks)} chunk(s) before [DONE]; a stream has more than one")
    deltas = [choice.get("delta") or {} for chunk in chunks for choice in chunk.get("choices", [])]
    text = "".join(delta.get("content") or "" for delta in deltas)
    if not text:
        raise CheckFailed("the chunks carry no content")
    run.stream_usage = chunks[-1].get("usage") or {}
    if not run.stream_usage:
        raise CheckFailed("no usage in the last chunk (the BFF asks for stream_options.include_usage)")
    tokens = f"{run.stream_usage.get('prompt_tokens')}/{run.stream_usage.get('completion_tokens')}"
    return f"{len(chunks)} chunks + [DONE], usage {tokens} tokens, request {run.stream_request_id}"


# --- spans and usage -------------------------------------------------------------------


def stored_request(run: Run, request_id: str, identity: Identity, deadline: float) -> dict[str, Any]:
    """GET /api/usage/requests/{id} until it has the typed row (404 until the span is stored)."""
    last = "no answer yet"
    while time.monotonic() < deadline:
        response = run.gateway.get(f"/api/usage/requests/{request_id}", headers=identity.headers())
        if response.status_code == 200:
            body = json_of(response)
            if body.get("request"):
                return body
            last = "the span is stored but its typed row (request) is still null"
        elif response.status_code == 404:
            last = describe(response)
        else:
            raise CheckFailed(f"reading request {request_id} as {identity.role}: {describe(response)}")
        time.sleep(0.5)
    raise CheckFailed(f"request {request_id} not stored within {SPAN_WAIT_SECONDS:.0f} s; last answer: {last}")


def verify_row(run: Run, body: dict[str, Any], usage: dict[str, Any], stream: bool) -> None:
    row = body["request"]
    want = {
        "user_id": need(run.user).user_id,
        "model": run.model,
        "status": 200,
        "stream": stream,
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
    }
    wrong = {name: (row.get(name), value) for name, value in want.items() if row.get(name) != value}
    if wrong:
        details = ", ".join(f"{name} {got!r} (expected {value!r})" for name, (got, value) in wrong.items())
        raise CheckFailed(f"{'streamed' if stream else 'chat'} request {body.get('request_id')}: {details}")
    if not body.get("trace_id") or not body.get("spans"):
        raise CheckFailed(f"request {body.get('request_id')} has no trace id or spans: {json.dumps(body)[:400]}")


def check_spans(run: Run) -> str:
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    started = time.monotonic()
    # The owner reads the chat, the admin the stream: both may.
    chat = stored_request(run, run.chat_request_id, need(run.user), deadline)
    verify_row(run, chat, run.chat_usage, stream=False)
    stream = stored_request(run, run.stream_request_id, need(run.admin), deadline)
    verify_row(run, stream, run.stream_usage, stream=True)
    services = sorted({span.get("service_name") for span in chat["spans"] + stream["spans"]})
    row = chat["request"]
    return (
        f"both requests stored after {time.monotonic() - started:.1f} s: user {row['user_id']}, model {row['model']}, "
        f"{row['input_tokens']}/{row['output_tokens']} tokens, ${row.get('cost_usd')}; "
        f"services in the traces: {', '.join(services)}"
    )


def check_clickhouse_traces(run: Run) -> str:
    """Straight from the ClickHouse server, parameterised: which services' spans joined the chat's trace."""
    query = (
        "SELECT ServiceName, count() FROM otel.otel_traces WHERE TraceId IN ("
        f"SELECT TraceId FROM otel.otel_traces WHERE SpanAttributes['{REQUEST_ID_ATTRIBUTE}'] = {{rid:String}}"
        ") GROUP BY ServiceName ORDER BY ServiceName FORMAT TSV"
    )
    args = ["exec", "-T", "clickhouse", "clickhouse-client", "--user", setting("CLICKHOUSE_USER", "default")]
    if setting("CLICKHOUSE_PASSWORD"):
        args += ["--password", setting("CLICKHOUSE_PASSWORD")]
    args += [f"--param_rid={run.chat_request_id}", "--query", query]
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    counts: dict[str, str] = {}
    while time.monotonic() < deadline:
        done = compose(*args)
        if done.returncode != 0:
            raise CheckFailed(f"clickhouse-client failed: {done.stderr.strip()[:400]}")
        counts = {name: n for name, _, n in (line.partition("\t") for line in done.stdout.strip().splitlines())}
        if set(TRACE_SERVICES) <= set(counts):
            break
        if counts:
            # The BFF's span is there; Kong's and LiteLLM's come in their own batches: a little longer.
            deadline = min(deadline, time.monotonic() + OTHER_SPANS_WAIT_SECONDS)
        time.sleep(1.0)
    if not counts:
        raise CheckFailed(
            f"no span with {REQUEST_ID_ATTRIBUTE} = {run.chat_request_id} in otel.otel_traces within {SPAN_WAIT_SECONDS:.0f} s"
        )
    missing = [name for name in TRACE_SERVICES if name not in counts]
    seen = ", ".join(f"{name} {n}" for name, n in counts.items())
    return f"spans in the chat's trace: {seen}" + (f"; no spans from {', '.join(missing)}" if missing else "")


def check_usage_after(run: Run) -> str:
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    want = run.requests_before + 2
    while (after := usage_requests(run)) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    if after < want:
        raise CheckFailed(f"the summary counts {after} requests for {need(run.user).user_id}, expected at least {want}")
    return f"{run.requests_before} -> {after} requests for {need(run.user).user_id}"


def check_usage_of_others(run: Run) -> str:
    other = need(run.admin).user_id
    response = run.gateway.get("/api/usage/summary", params={"user": other}, headers=need(run.user).headers())
    code = json_of(expect(response, 403)).get("error", {}).get("code")
    return f"a user asking for {other}'s usage: 403 {code}"


# --- monitoring ----------------------------------------------------------------------


def check_monitoring(run: Run) -> str:
    token = need(run.admin).token
    for how, headers in (("bearer", {"Authorization": f"Bearer {token}"}), ("cookie", {"Cookie": f"token={token}"})):
        response = expect(run.gateway.get("/monitoring/", headers=headers))
        if not response.headers.get("content-type", "").startswith("text/html"):
            raise CheckFailed(f"admin by {how}: content-type {response.headers.get('content-type')!r}, not HTML")
    return "200 HTML for an admin (bearer and cookie)"


def check_monitoring_refused(run: Run) -> str:
    expect(run.gateway.get("/monitoring/"), 401)
    return "401 without a token"


# --- running ---------------------------------------------------------------------------

Check = Callable[[Run], str]


def checks_for(mode: Mode) -> list[tuple[str, Check]]:
    health: list[tuple[str, Check]] = (
        [("BFF ready", check_gateway_ready), ("LiteLLM ready", check_litellm_ready)]
        if mode == "local"
        else [
            ("compose services", check_compose_services),
            ("gateway ready", check_gateway_ready),
            ("Open-WebUI health", check_webui_health),
        ]
    )
    return [
        *health,
        ("tokens", check_tokens),
        ("models", check_models),
        ("usage before", check_usage_before),
        ("chat", check_chat),
        ("streamed chat", check_stream),
        ("spans stored", check_spans),
        *([("ClickHouse traces", check_clickhouse_traces)] if mode == "compose" else []),
        ("usage summary", check_usage_after),
        ("usage of others refused", check_usage_of_others),
        ("monitoring page", check_monitoring),
        ("monitoring without token", check_monitoring_refused),
    ]


def clients(mode: Mode) -> tuple[httpx.Client, httpx.Client | None, httpx.Client | None]:
    if mode == "local":
        gateway = httpx.Client(base_url=f"http://127.0.0.1:{setting('BFF_PORT', '8080')}", timeout=HTTP_TIMEOUT)
        litellm = httpx.Client(base_url=f"http://127.0.0.1:{setting('LITELLM_PORT', '4000')}", timeout=HTTP_TIMEOUT)
        return gateway, None, litellm
    public = f"http://127.0.0.1:{setting('GATEWAY_PORT', '8000')}"
    gateway = httpx.Client(base_url=f"{public}/gateway", timeout=HTTP_TIMEOUT)  # Kong strips /gateway
    return gateway, httpx.Client(base_url=public, timeout=HTTP_TIMEOUT), None


def delete_temporary_user(run: Run) -> None:
    if run.temporary_user_id and run.webui is not None and run.admin is not None:
        try:
            response = run.webui.delete(f"/api/v1/users/{run.temporary_user_id}", headers=run.admin.headers())
            if response.status_code != 200:
                print(f"  note: could not delete the temporary user {run.temporary_user_id}: {describe(response)}")
        except httpx.HTTPError as exc:
            print(f"  note: could not delete the temporary user {run.temporary_user_id}: {exc}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["local", "compose"], default="compose")
    parser.add_argument("--model", default="mock-mini", help="a model users may chat with (default: mock-mini)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True, errors="replace")  # type: ignore[union-attr]

    gateway, webui, litellm = clients(args.mode)
    run = Run(mode=args.mode, model=args.model, gateway=gateway, webui=webui, litellm=litellm)
    print(f"integration checks ({args.mode}) against {gateway.base_url}, model {args.model}")
    started = time.monotonic()
    passed = 0
    try:
        for name, check in checks_for(args.mode):
            try:
                detail = check(run)
            except CheckFailed as exc:
                detail = str(exc)
            except httpx.HTTPError as exc:
                url = exc.request.url if isinstance(exc, httpx.RequestError) else ""
                detail = f"{type(exc).__name__} {url}: {exc or 'no detail'}"
                if isinstance(exc, httpx.ConnectError):
                    detail += " (is scripts/dev.sh running? --start starts one)" if args.mode == "local" else " (is compose up?)"
            else:
                passed += 1
                print(f"✓ {name}: {detail}")
                continue
            print(f"✗ {name}: {detail}")
            print(f"FAILED: {name} ({passed} checks passed before it) in {time.monotonic() - started:.1f} s")
            return 1
    finally:
        delete_temporary_user(run)
        for client in (gateway, webui, litellm):
            if client is not None:
                client.close()
    print(f"PASSED: {passed} checks in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
