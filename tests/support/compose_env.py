"""The environment docker-compose.yml gives a service, for running it on loopback in tests.

    bff_environment(variables, hosts, overrides)

reads the `bff` service's `environment` from docker-compose.yml, substitutes compose's
variables (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
`${VAR:+alt}`, `$VAR`, `$$`) from `variables` (the test secrets; nothing from this machine's
environment), and replaces only the host names of the URLs in the values: each
`service:port` must be named in `hosts` (-> `127.0.0.1:port`). Scheme, user info, path and
every other value stay exactly as compose has them. `overrides` replaces (or, with None,
removes) whole variables, and each must be one compose sets.

It fails loudly rather than pass something unnoticed: a URL whose host is not in `hosts`
(a new compose variable pointing at another service), a `hosts` entry no value uses, a
variable compose would refuse (`:?`) or leave empty (`${VAR}` unset), an override of a
variable compose no longer sets, and a value that still names a compose service.

Also here: loopback stand-ins for the services around the BFF that have no package to
run (Kong's /gateway route, the OTEL collector's receiver and health check).
"""

import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from support.otlp_receiver import OtlpReceiver
from support.servers import ThreadServer, strip_prefix

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)
# scheme://[userinfo@]host[:port]: only host[:port] is ever replaced
_URL = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/\s]*@)?)(?P<host>[A-Za-z0-9.\-]+)(?::(?P<port>\d+))?")
LOOPBACK = "127.0.0.1"


class ComposeShapeError(AssertionError):
    """docker-compose.yml changed in a way the loopback environment does not cover."""


def compose_file(path: Path = COMPOSE) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ComposeShapeError(f"{path} has no services")
    return document


def raw_environment(service: str, path: Path = COMPOSE) -> dict[str, str]:
    """The service's `environment` as written (dict or list form), values as strings."""
    services = compose_file(path)["services"]
    if service not in services:
        raise ComposeShapeError(f"{path} has no service {service!r}")
    environment = services[service].get("environment") or {}
    if isinstance(environment, list):
        pairs = (entry.split("=", 1) if "=" in entry else (entry, None) for entry in environment)
        environment = dict(pairs)
    result = {}
    for name, value in environment.items():
        if value is None:
            raise ComposeShapeError(f"{service}.{name} takes its value from the host environment: give it one in compose")
        if isinstance(value, bool):
            raise ComposeShapeError(f"{service}.{name} is a YAML boolean: compose refuses it, quote it")
        result[str(name)] = str(value)
    return result


def substitute(value: str, variables: Mapping[str, str], where: str = "value") -> str:
    """Compose's variable interpolation, strict: what compose would only warn about fails here."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise ComposeShapeError(f"{where}: a lone '$' (compose wants '$$'): {value!r}")
        name = match["braced"] or match["bare"]
        operator, argument = match["operator"], match["argument"] or ""
        current = variables.get(name)
        unset_or_empty = not current
        if operator == ":-":
            return argument if unset_or_empty else current  # type: ignore[return-value]
        if operator == "-":
            return argument if current is None else current
        if operator == ":?":
            if unset_or_empty:
                raise ComposeShapeError(f"{where}: compose refuses to start without {name}: {argument}")
            return current  # type: ignore[return-value]
        if operator == "?":
            if current is None:
                raise ComposeShapeError(f"{where}: compose refuses to start without {name}: {argument}")
            return current
        if operator == ":+":
            return "" if unset_or_empty else substitute(argument, variables, where)
        if operator == "+":
            return "" if current is None else substitute(argument, variables, where)
        if current is None:
            raise ComposeShapeError(f"{where}: ${{{name}}} has no default and is not among the test's variables")
        return current

    return _VARIABLE.sub(one, value)


def _replace_hosts(value: str, hosts: Mapping[str, str], used: set[str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        host, port = match["host"], match["port"]
        key = f"{host}:{port}" if port else host
        if key not in hosts:
            raise ComposeShapeError(
                f"{where} points at {key!r}, which the test does not run on loopback: map it in `hosts` ({value!r})"
            )
        used.add(key)
        return match["prefix"] + hosts[key]

    return _URL.sub(one, value)


def _skeleton(value: str) -> str:
    return _URL.sub(lambda match: match["prefix"] + "\0", value)


def _hosts_in(value: str) -> list[str]:
    return [f"{m['host']}:{m['port']}" if m["port"] else m["host"] for m in _URL.finditer(value)]


def service_environment(
    service: str,
    variables: Mapping[str, str],
    hosts: Mapping[str, str],
    overrides: Mapping[str, str | None] | None = None,
    path: Path = COMPOSE,
) -> dict[str, str]:
    """See the module docstring. `hosts` maps compose's `service:port` to a loopback `127.0.0.1:port`."""
    overrides = dict(overrides or {})
    for key, target in hosts.items():
        if not target.startswith(LOOPBACK + ":"):
            raise ComposeShapeError(f"hosts[{key!r}] = {target!r}: only loopback ({LOOPBACK}:port) replaces a host")
    raw = raw_environment(service, path)
    stale = sorted(set(overrides) - set(raw))
    if stale:
        raise ComposeShapeError(f"overrides of variables {service} no longer has in compose: {stale}")
    services = set(compose_file(path)["services"])
    used: set[str] = set()
    environment: dict[str, str] = {}
    for name, written in raw.items():
        where = f"{service}.{name}"
        if name in overrides:
            # what compose points it at still counts as a use of that host's stand-in
            used.update(key for key in _hosts_in(substitute(written, variables, where)) if key in hosts)
            replacement = overrides[name]
            if replacement is not None:
                environment[name] = replacement
            continue
        substituted = substitute(written, variables, where)
        kept = _replace_hosts(substituted, hosts, used, where)
        # Kept verbatim but for hosts: the same text around the hosts, each host its loopback stand-in.
        if _skeleton(kept) != _skeleton(substituted) or _hosts_in(kept) != [hosts[key] for key in _hosts_in(substituted)]:
            raise ComposeShapeError(f"{where}: {kept!r} differs from compose's {substituted!r} beyond its hosts")
        for url in _URL.finditer(kept):
            if url["host"] != LOOPBACK:
                raise ComposeShapeError(f"{where}: {kept!r} still leaves loopback")
        leftover = [other for other in services if re.search(rf"(?<![A-Za-z0-9_.\-]){re.escape(other)}:\d", kept)]
        if leftover:
            raise ComposeShapeError(f"{where}: {kept!r} still names compose service(s) {leftover}")
        environment[name] = kept
    unused = sorted(set(hosts) - used)
    if unused:
        raise ComposeShapeError(f"no {service} variable points at {unused} any more: drop them from `hosts`")
    return environment


def bff_environment(
    variables: Mapping[str, str], hosts: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    return service_environment("bff", variables, hosts, overrides)


# --- Loopback stand-ins for the compose services around the BFF ------------------------

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class KongStandIn:
    """What Kong's `gateway` route does in front of the BFF (config/kong.yml), on loopback.

    /gateway/x reaches the BFF as /x (strip_path), the Host header is kept (preserve_host),
    X-Forwarded-* are added, X-Request-Id is generated when absent (correlation-id), and
    answers are relayed as they arrive, chunk by chunk, so streams stay streams.
    """

    def __init__(self, prefix: str, upstream: str):
        self.prefix = prefix
        self.upstream = upstream.rstrip("/")
        self.generated_request_ids: list[str] = []
        self.server = ThreadServer(strip_prefix(prefix, self._app))

    def start(self) -> "KongStandIn":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        """The public base URL, prefix included."""
        return self.server.url + self.prefix

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Kong's upstream timeouts for the BFF service are 600 s.
                self._client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers = [
            (name, value) for name, value in request.headers.raw if name.decode().lower() not in HOP_BY_HOP | {"content-length"}
        ]
        names = {name.decode().lower() for name, _ in headers}
        if "x-request-id" not in names:
            request_id = str(uuid.uuid4())
            self.generated_request_ids.append(request_id)
            headers.append((b"x-request-id", request_id.encode()))
        client_host = scope["client"][0] if scope.get("client") else ""
        headers += [
            (b"x-forwarded-for", client_host.encode()),
            (b"x-forwarded-proto", scope.get("scheme", "http").encode()),
            (b"x-forwarded-host", request.headers.get("host", "").encode()),
            (b"x-forwarded-prefix", self.prefix.encode()),
        ]
        target = self.upstream + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        upstream_request = self._client.build_request(request.method, target, headers=headers, content=await request.body())
        try:
            upstream = await self._client.send(upstream_request, stream=True)
        except httpx.HTTPError:
            await PlainTextResponse("An invalid response was received from the upstream server", status_code=502)(
                scope, receive, send
            )
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": [(n, v) for n, v in upstream.headers.raw if n.decode().lower() not in HOP_BY_HOP],
                }
            )
            async for chunk in upstream.aiter_raw():  # raw: content-length and content-encoding still hold
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await upstream.aclose()


class CollectorStandIn(OtlpReceiver):
    """The OTEL collector on loopback: OTLP/HTTP traces on one port (compose's :4318), decoded
    for the test, and its health_check extension's `/` on another (compose's :13133)."""

    def __init__(self) -> None:
        super().__init__()
        self.health = ThreadServer(Starlette(routes=[Route("/", self._health)]))

    async def _health(self, _: Request) -> Response:
        return JSONResponse({"status": "Server available"})

    def start(self) -> "CollectorStandIn":
        self.server.start()
        self.health.start()
        return self

    def stop(self) -> None:
        self.health.stop()
        self.server.stop()

    @property
    def health_url(self) -> str:
        return self.health.url
