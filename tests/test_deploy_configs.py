"""The compose deployment, checked without Docker: docker-compose.yml (Debian's docker-compose),
config/kong.yml (Debian's decK plus our own rules), config/otel-collector.yaml against the
schema files and exporterhelper's queue/batch rules, the image build contexts against their
.dockerignore, the keep-alive ordering between Kong, the BFF and LiteLLM, and the schema files
themselves on the embedded engine."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bff.clickhouse import ClickHouseStore, _statements
from bff.pipeline.context import REQUEST_ID_HEADER
from bff.settings import Settings
from bff.telemetry.clickhouse_exporter import COLUMNS, TRACES_TABLE
from conftest import ROOT, Bff

COMPOSE = ROOT / "docker-compose.yml"
KONG = ROOT / "config" / "kong.yml"
COLLECTOR = ROOT / "config" / "otel-collector.yaml"
SCHEMA_DIR = ROOT / "config" / "clickhouse"
ENV_EXAMPLE = ROOT / ".env.example"

# Plugins bundled with Kong Gateway OSS 3.9 (kong/constants.lua); anything else is Enterprise or custom.
KONG_OSS_PLUGINS = {
    "jwt", "acl", "correlation-id", "cors", "oauth2", "tcp-log", "udp-log", "file-log", "http-log", "key-auth",
    "hmac-auth", "basic-auth", "ip-restriction", "request-transformer", "response-transformer",
    "request-size-limiting", "rate-limiting", "response-ratelimiting", "syslog", "loggly", "datadog", "ldap-auth",
    "statsd", "bot-detection", "aws-lambda", "request-termination", "prometheus", "proxy-cache", "session",
    "acme", "grpc-gateway", "grpc-web", "pre-function", "post-function", "azure-functions", "zipkin",
    "opentelemetry", "ai-proxy", "ai-prompt-decorator", "ai-prompt-template", "ai-prompt-guard",
    "ai-request-transformer", "ai-response-transformer", "standard-webhooks", "redirect",
}  # fmt: skip

# Long-running services must report health; these two cannot or need not (see the file's comments).
WITHOUT_HEALTHCHECK = {"otel-collector-queue": "one-shot init step", "otel-collector": "distroless image"}
# Init containers that run once and exit: never restarted, only waited for.
ONE_SHOT = {"otel-collector-queue"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: scripts/test.sh installs it (apt-get)"
    return path


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_][A-Z0-9_]*=", line))
    return dict(pairs)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose config: validates, then prints the file with .env.example (plus secrets) filled in."""
    values = _env_example()
    for secret in ("CLICKHOUSE_PASSWORD", "LITELLM_MASTER_KEY", "WEBUI_SECRET_KEY", "FORWARD_USER_INFO_HEADER_JWT_SECRET", "OPENWEBUI_BFF_SERVICE_KEY"):
        values[secret] = f"test-{secret.lower()}"
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    base = [_tool("docker-compose"), "--project-directory", str(ROOT), "--env-file", str(env_file), "-f", str(COMPOSE)]
    clean_env = {"PATH": "/usr/bin:/bin"}  # nothing from this machine's environment leaks in
    quiet = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, env=clean_env, check=False)
    assert quiet.returncode == 0, quiet.stderr
    rendered = subprocess.run([*base, "--profile", "ollama", "--profile", "comfyui", "config"], capture_output=True, text=True, env=clean_env, check=False)
    assert rendered.returncode == 0, rendered.stderr
    return yaml.safe_load(rendered.stdout)


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("")
    answer = subprocess.run(
        [_tool("docker-compose"), "--project-directory", str(ROOT), "--env-file", str(tmp_path / ".env"), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert answer.returncode != 0 and "in .env" in answer.stderr


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    assert used, "no variables found"
    missing = used - set(_env_example())
    assert not missing, f"add to .env.example with a comment: {sorted(missing)}"


def test_compose_file_holds_no_secret() -> None:
    for name, value in re.findall(r"^\s+([A-Z_]*(?:KEY|SECRET|PASSWORD)[A-Z_]*):\s*(.+)$", COMPOSE.read_text(), re.MULTILINE):
        assert value.strip().startswith("${"), f"{name} must come from .env"


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount; docker-compose v1 prints them as 'source:target[:mode]'."""
    return [tuple(volume.split(":")[:2]) for volume in service.get("volumes", [])]  # type: ignore[misc]


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    binds = [(name, source) for name, service in compose["services"].items() for source, _ in _volumes(service) if source.startswith("/")]
    assert binds
    for name, source in binds:
        assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
    for name, service in yaml.safe_load(COMPOSE.read_text())["services"].items():  # v1 inlines env files
        for env_file in [service["env_file"]] if isinstance(service.get("env_file"), str) else service.get("env_file", []):
            assert (ROOT / env_file).is_file(), f"{name}: env_file {env_file}"
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (Path(build["context"]) / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_services_images_health_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"kong", "bff", "litellm", "otel-collector", "clickhouse", "open-webui", "ollama", "comfyui", "redis"}
    assert expected <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert re.search(r":v?\d+\.\d+(\.\d+)*", image), f"{name}: pin an exact image version, not {image!r}"
        if name not in WITHOUT_HEALTHCHECK:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["kong"]["image"].startswith("kong:3.9")
    assert "contrib" in services["otel-collector"]["image"]
    major, minor = (int(part) for part in services["clickhouse"]["image"].split(":")[1].split(".")[:2])
    assert (major, minor) >= (24, 11)
    for name, service in services.items():  # every dependency that can be healthy is waited for
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_healthy" if dependency not in WITHOUT_HEALTHCHECK else condition["condition"]
            assert condition["condition"] == wanted, f"{name} -> {dependency}"
    assert set(services["kong"]["depends_on"]) == {"bff", "open-webui"}
    assert {"litellm", "clickhouse"} <= set(services["bff"]["depends_on"])
    assert set(services["ollama"]["profiles"]) == {"ollama"} and set(services["comfyui"]["profiles"]) == {"comfyui"}


def test_long_running_services_restart_and_one_shot_steps_do_not(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert ONE_SHOT <= set(services)
    for name, service in services.items():
        wanted = "no" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == wanted, f"{name}: restart: {wanted}, not {service.get('restart')!r}"
    for name, service in services.items():  # a one-shot step is waited for until it has finished
        for dependency, condition in service.get("depends_on", {}).items():
            if dependency in ONE_SHOT:
                assert condition["condition"] == "service_completed_successfully", f"{name} -> {dependency}"


def test_only_kong_and_loopback_clickhouse_are_published(compose: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in compose["services"].items() if service.get("ports")}
    assert set(published) == {"kong", "clickhouse"}
    assert [port["target"] for port in published["kong"]] == [8000]
    assert all(str(port).startswith("127.0.0.1:") for port in published["clickhouse"])


def test_compose_wires_the_bff_as_the_design_says(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bff = services["bff"]["environment"]
    settings = Settings(**{k.lower(): v for k, v in bff.items() if k.lower() in Settings.model_fields})  # parses as the BFF would
    assert settings.clickhouse_url.startswith("http://") and "@clickhouse:8123" in settings.clickhouse_url
    assert settings.otel_exporter_otlp_endpoint == "http://otel-collector:4318"
    assert settings.public_path_prefix == "/gateway" and settings.role_source == "api"
    assert settings.open_webui_url == "http://open-webui:8080" and len(settings.bff_service_keys) == 1
    assert settings.cors_allow_origins == []  # Kong answers CORS
    litellm = services["litellm"]["environment"]
    assert litellm["OTEL_ENDPOINT"] == "http://otel-collector:4318/v1/traces"
    webui = services["open-webui"]
    assert webui["environment"]["OPENAI_API_KEY"] == bff["BFF_SERVICE_KEYS"].split(",")[0]
    assert webui["environment"]["WEBUI_SECRET_KEY"] == bff["WEBUI_SECRET_KEY"]
    assert webui["environment"]["FORWARD_USER_INFO_HEADER_JWT_SECRET"] == bff["FORWARD_USER_INFO_HEADER_JWT_SECRET"]
    openwebui_env = dict(line.split("=", 1) for line in (ROOT / "webui-integration" / "openwebui.env").read_text().splitlines() if "=" in line and not line.startswith("#"))
    assert openwebui_env["OPENAI_API_BASE_URL"] == openwebui_env["IMAGES_OPENAI_API_BASE_URL"] == "http://bff:8080/v1"
    assert openwebui_env["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"


def test_redis_is_pinned_private_and_shared_by_the_bff_and_litellm(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    assert re.fullmatch(r"redis:7\.4\.\d+-alpine", redis["image"]), redis["image"]  # an exact release
    assert not redis.get("ports"), "Redis holds budgets and limits: never publish it"
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert "/data" in [target for _, target in _volumes(redis)] and "--appendonly" in redis["command"]
    bff, litellm = services["bff"], services["litellm"]
    settings = Settings(**{k.lower(): v for k, v in bff["environment"].items() if k.lower() in Settings.model_fields})
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == "redis://redis:6379/0"
    assert (litellm["environment"]["REDIS_HOST"], str(litellm["environment"]["REDIS_PORT"])) == ("redis", "6379")
    for name in ("bff", "litellm"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    # LiteLLM reads them in its router_settings (shared cooldowns, rpm/tpm and budget spend)
    router = yaml.safe_load((ROOT / "config" / "litellm.yaml").read_text())["router_settings"]
    assert (router["redis_host"], router["redis_port"]) == ("os.environ/REDIS_HOST", "os.environ/REDIS_PORT")
    # scripts/dev.sh exports every .env line, and an empty REDIS_HOST points LiteLLM at ":6379": never an empty one
    assert not {"REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"} & set(_env_example())


UVICORN_DEFAULT_KEEPALIVE_SECONDS = 5  # uvicorn's timeout_keep_alive, what LiteLLM uses without --keepalive_timeout
KONG_DEFAULT_UPSTREAM_IDLE_SECONDS = 60  # Kong's upstream_keepalive_idle_timeout


def _cli_option(command: list[str], option: str) -> str | None:
    for index, word in enumerate(command):
        if word == option:
            return command[index + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def test_keepalive_timeouts_close_idle_connections_on_the_client_side_first(compose: dict[str, Any]) -> None:
    """On each hop the pooling client must give up an idle connection before the server closes it,
    or a request can go out on a connection the server is closing (a 502 / connection reset)."""
    services = compose["services"]
    bff_env = services["bff"]["environment"]
    kong_idle = float(services["kong"]["environment"].get("KONG_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT", KONG_DEFAULT_UPSTREAM_IDLE_SECONDS))
    fields = Settings.model_fields

    def bff_setting(name: str) -> float:
        if name.upper() in bff_env:
            return float(bff_env[name.upper()])
        assert name in fields, f"set {name.upper()} in the bff service's environment"
        return float(fields[name].default)

    bff_keepalive = bff_setting("bff_keepalive_seconds")
    assert kong_idle < bff_keepalive, f"Kong keeps idle upstream connections {kong_idle}s, the BFF only {bff_keepalive}s"
    pool_expiry = bff_setting("litellm_pool_keepalive_seconds")
    litellm_keepalive = float(_cli_option(services["litellm"]["command"], "--keepalive_timeout") or UVICORN_DEFAULT_KEEPALIVE_SECONDS)
    assert pool_expiry < litellm_keepalive, f"the BFF pool keeps idle connections {pool_expiry}s, LiteLLM only {litellm_keepalive}s"
    for name in ("bff_keepalive_seconds", "litellm_pool_keepalive_seconds"):  # .env.example documents them
        assert name.upper() in _env_example(), f"document {name.upper()} in .env.example"
    # Without compose's values, the BFF's own defaults keep the same order against the defaults.
    if "bff_keepalive_seconds" in fields:
        assert KONG_DEFAULT_UPSTREAM_IDLE_SECONDS < fields["bff_keepalive_seconds"].default
    if "litellm_pool_keepalive_seconds" in fields:
        assert fields["litellm_pool_keepalive_seconds"].default < UVICORN_DEFAULT_KEEPALIVE_SECONDS


def test_bff_image_is_multi_stage_non_root_with_the_chart_assets() -> None:
    dockerfile = (ROOT / "backend" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+:(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 3 and all(re.match(r"\d", tag) for tag in stages), "pinned base images, several stages"
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    assert "package-lock.json" in dockerfile and "npm ci" in dockerfile
    assert "monitoring/node_modules" in dockerfile and "HEALTHCHECK" in dockerfile


# --- Image build contexts and .dockerignore -------------------------------------------------

# What a developer checkout holds that must never reach a build context (paths relative to it).
BIG_OR_SECRET = [
    ".git/HEAD",
    ".venv/bin/python",
    ".venv-litellm/bin/litellm",
    ".venv-openwebui/bin/open-webui",
    ".data/clickhouse/metadata/otel.sql",
    ".data/media/job/0.png",
    "node_modules/chart.js/package.json",
    "backend/bff/monitoring/node_modules/chart.js/dist/chart.umd.min.js",
    "tests/output/monitoring-admin.png",
    ".env",
]


class DockerIgnore:
    """.dockerignore as Docker reads it (moby/patternmatcher): one pattern a line, '#' comments,
    '!' exceptions, Go filepath.Match globs plus '**'; a pattern also matches everything under a
    directory it matches; the last matching line decides."""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[re.Pattern[str], bool]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = line[1:].strip() if exception else line
            pattern = re.sub(r"/+", "/", pattern).strip("/")  # filepath.Clean; a leading '/' is the context root
            self.patterns.append((re.compile(self._regex(pattern)), exception))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "^", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            if ch == "*":
                out += "[^/]*"
            elif ch == "?":
                out += "[^/]"
            elif ch == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end
            elif ch == "\\" and i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            else:
                out += re.escape(ch)
            i += 1
        return out + "$"

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for regex, exception in self.patterns:
            if any(regex.match(candidate) for candidate in candidates):
                verdict = not exception
        return verdict


def _builds(compose: dict[str, Any]) -> list[tuple[str, Path, Path]]:
    """(service, context, Dockerfile) of every image compose builds."""
    builds = []
    for name, service in compose["services"].items():
        if service.get("build"):
            context = Path(service["build"]["context"])
            builds.append((name, context, context / service["build"].get("dockerfile", "Dockerfile")))
    return builds


def _dockerignore(context: Path, dockerfile: Path) -> DockerIgnore:
    """BuildKit prefers <Dockerfile>.dockerignore next to the Dockerfile, then <context>/.dockerignore."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return DockerIgnore(candidate.read_text())
    return DockerIgnore("")


def _copy_sources(dockerfile: Path) -> list[str]:
    """Sources of COPY/ADD lines that read the build context (not --from another stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        match = re.match(r"^\s*(COPY|ADD)\s+(.*)$", line, re.IGNORECASE)
        if not match:
            continue
        words = match.group(2).split()
        if any(word.startswith("--from") for word in words):
            continue
        args = [word for word in words if not word.startswith("--")]
        if args and args[0].startswith("["):  # JSON form
            args = [str(arg) for arg in yaml.safe_load(" ".join(args))]
        sources += args[:-1]
    return sources


def _checkout_files(context: Path, source: str) -> list[str]:
    """Files under a COPY source in this checkout (tracked or new, not git-ignored), relative to the context."""
    listing = subprocess.run(
        ["git", "-C", str(context), "ls-files", "--cached", "--others", "--exclude-standard", "--", source],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in listing.stdout.splitlines() if (context / line).is_file()]


def test_build_contexts_send_what_the_dockerfiles_copy_and_nothing_big(compose: dict[str, Any]) -> None:
    builds = _builds(compose)
    assert {name for name, _, _ in builds} == {"bff", "comfyui"}
    for name, context, dockerfile in builds:
        ignore = _dockerignore(context, dockerfile)
        for source in _copy_sources(dockerfile):
            assert (context / source).exists(), f"{name}: COPY {source} is not in the context {context}"
            assert not ignore.excluded(source), f"{name}: COPY {source}, but the .dockerignore excludes it"
            files = _checkout_files(context, source)
            assert files, f"{name}: nothing to COPY under {source}"
            dropped = [path for path in files if ignore.excluded(path)]
            assert not dropped, f"{name}: the .dockerignore drops files the image needs: {dropped[:5]}"
        if context.resolve() == ROOT.resolve():
            for path in BIG_OR_SECRET:
                assert ignore.excluded(path), f"{name}: {path} would be sent to the build context"
        else:  # a small context of its own: nothing of a checkout's bulk lives there
            assert not any((context / path.split("/")[0]).exists() for path in BIG_OR_SECRET), name
    bff = next(dockerfile for name, _, dockerfile in builds if name == "bff")
    copied = _copy_sources(bff)
    assert {"backend/bff", "config", "backend/bff/monitoring/package-lock.json"} <= set(copied), copied


def test_dockerignore_matcher_follows_docker_rules() -> None:
    ignore = DockerIgnore("# comment\n.venv-*\n**/node_modules\n/.data\ntests\n!tests/keep\n*.md\n!README.md\n")
    assert ignore.excluded(".venv-litellm/bin/x") and not ignore.excluded(".venv/bin/x")
    assert ignore.excluded("node_modules") and ignore.excluded("a/b/node_modules/c.js")
    assert ignore.excluded(".data/x") and not ignore.excluded("backend/.data/x")
    assert ignore.excluded("tests/output/a.png") and not ignore.excluded("tests/keep/a.py")
    assert ignore.excluded("CHANGES.md") and not ignore.excluded("README.md") and not ignore.excluded("docs/CHANGES.md")


# --- Kong ---------------------------------------------------------------------------------


def test_kong_config_passes_deck_validate() -> None:
    answer = subprocess.run([_tool("deck"), "validate", "-s", str(KONG)], capture_output=True, text=True, check=False)
    assert answer.returncode == 0, answer.stderr


def _kong() -> dict[str, Any]:
    return yaml.safe_load(KONG.read_text())


def _plugins(config: dict[str, Any]) -> list[dict[str, Any]]:
    nested = [plugin for service in config["services"] for plugin in service.get("plugins", [])]
    nested += [plugin for service in config["services"] for route in service.get("routes", []) for plugin in route.get("plugins", [])]
    return [*config.get("plugins", []), *nested]


def test_kong_uses_only_oss_plugins_and_routes_reach_compose_services(compose: dict[str, Any]) -> None:
    config = _kong()
    assert config["_format_version"] == "3.0"
    for plugin in _plugins(config):
        assert plugin["name"] in KONG_OSS_PLUGINS, f"{plugin['name']} is not bundled with Kong OSS"
    names = {service["name"] for service in config["services"]}
    for route in config.get("routes", []):  # top-level routes name their service
        assert route["service"]["name"] in names, route["name"]
    for service in config["services"]:
        host = re.match(r"^http://([a-z-]+):8080$", service["url"]).group(1)  # type: ignore[union-attr]
        assert host in compose["services"], f"{service['name']} points at {host}, not a compose service"
        assert service.get("routes"), f"{service['name']} has no route"
    routes = {route["name"]: (service["name"], route) for service in config["services"] for route in service["routes"]}
    assert routes["open-webui"][0] == "open-webui" and routes["open-webui"][1]["paths"] == ["/"]
    gateway_service, gateway = routes["gateway"]
    assert gateway_service == "bff" and gateway["paths"] == [compose["services"]["bff"]["environment"]["PUBLIC_PATH_PREFIX"]]
    assert gateway["strip_path"] is True and gateway["preserve_host"] is True


def test_kong_plugins_match_what_the_bff_and_collector_expect() -> None:
    config = _kong()
    bff = next(service for service in config["services"] if service["name"] == "bff")
    plugins = {plugin["name"]: plugin["config"] for plugin in bff["plugins"]}
    assert plugins["rate-limiting"]["policy"] == "local"
    limit = plugins["request-size-limiting"]
    assert limit["size_unit"] == "megabytes" and limit["allowed_payload_size"] * 1024 * 1024 == Settings.model_fields["max_request_bytes"].default
    assert plugins["correlation-id"]["header_name"].lower() == REQUEST_ID_HEADER
    assert plugins["correlation-id"]["generator"] == "uuid"  # "uuid#counter" has a '#', which the BFF would not adopt
    assert plugins["cors"]["origins"]
    otel = next(plugin["config"] for plugin in config["plugins"] if plugin["name"] == "opentelemetry")
    collector = yaml.safe_load(COLLECTOR.read_text())
    http_port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    assert otel["traces_endpoint"] == f"http://otel-collector:{http_port}/v1/traces"
    assert otel["propagation"]["default_format"] == "w3c"


# --- OTEL collector -------------------------------------------------------------------------


def test_collector_pipeline_references_only_defined_components() -> None:
    collector = yaml.safe_load(COLLECTOR.read_text())
    service = collector["service"]
    for extension in service["extensions"]:
        assert extension in collector["extensions"], extension
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"{name}: {kind[:-1]} {component} is not defined"
        assert pipeline["processors"][0] == "memory_limiter", "the memory limiter must come first"
        assert "batch" not in pipeline["processors"], "batch in the exporter's sending_queue, after the persistent queue"
    used = {c for p in service["pipelines"].values() for kind in ("receivers", "processors", "exporters") for c in p.get(kind, [])}
    defined = {c for kind in ("receivers", "processors", "exporters") for c in collector[kind]}
    assert defined == used, f"defined but unused: {defined - used}"
    assert set(collector["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "health_check" in service["extensions"]
    assert not any(name.split("/")[0] == "batch" for name in collector["processors"]), "no batch processor"


# exporterhelper's sending_queue as of collector v0.150.0 (exporter/exporterhelper/README.md,
# internal/queuebatch/config.go): the queue's fields and its `batch` section's.
QUEUE_FIELDS = {"enabled", "wait_for_result", "sizer", "queue_size", "block_on_overflow", "storage", "num_consumers", "batch"}
QUEUE_BATCH_FIELDS = {"flush_timeout", "sizer", "min_size", "max_size", "partition"}


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(duration))
    assert match, f"not a duration: {duration!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_collector_batches_in_the_sending_queue_after_the_persistent_queue() -> None:
    """Spans go to disk first (file_storage), batches are built from the queue: queuebatch.Config.Validate's rules."""
    queue = yaml.safe_load(COLLECTOR.read_text())["exporters"]["clickhouse"]["sending_queue"]
    assert set(queue) <= QUEUE_FIELDS, f"unknown sending_queue fields: {set(queue) - QUEUE_FIELDS}"
    assert queue["enabled"] is True and queue["storage"].startswith("file_storage")
    assert queue.get("wait_for_result") is not True, "not supported with a persistent queue"
    assert queue["queue_size"] > 0 and queue.get("num_consumers", 10) > 0
    batch = queue["batch"]
    assert set(batch) <= QUEUE_BATCH_FIELDS, f"unknown sending_queue.batch fields: {set(batch) - QUEUE_BATCH_FIELDS}"
    queue_sizer = queue.get("sizer", "requests")
    # Unset, batch.sizer takes the queue's sizer when that is set explicitly, else items.
    batch_sizer = batch.get("sizer", queue_sizer if "sizer" in queue else "items")
    assert batch_sizer in {"items", "bytes"}, f"batch supports only items or bytes, not {batch_sizer!r}"
    assert _seconds(batch["flush_timeout"]) > 0
    min_size, max_size = batch.get("min_size", 8192), batch.get("max_size", 0)
    assert min_size >= 0 and (max_size == 0 or max_size >= min_size)
    if batch_sizer == queue_sizer:
        assert min_size <= queue["queue_size"], "min_size must fit in the queue"


def test_collector_writes_the_schema_files_tables_and_keeps_spans_across_restarts(compose: dict[str, Any]) -> None:
    exporter = yaml.safe_load(COLLECTOR.read_text())["exporters"]["clickhouse"]
    assert exporter["create_schema"] is False
    assert f"{exporter['database']}.{exporter['traces_table_name']}" == TRACES_TABLE
    schema = (SCHEMA_DIR / "001_otel_traces.sql").read_text()
    assert f"CREATE TABLE IF NOT EXISTS {TRACES_TABLE} (" in schema
    assert exporter["endpoint"] == "tcp://clickhouse:9000"
    assert exporter["retry_on_failure"]["enabled"] is True
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True
    storage = yaml.safe_load(COLLECTOR.read_text())["extensions"][queue["storage"]]
    mounts = {target: source for source, target in _volumes(compose["services"]["otel-collector"])}
    assert not mounts[storage["directory"]].startswith("/"), "the sending queue must live on a named volume"


# --- ClickHouse schema ----------------------------------------------------------------------


def test_schema_files_run_twice_on_the_embedded_engine(bff: Bff) -> None:
    """Idempotent (the BFF applies them on every start, ClickHouse's init directory once)."""
    store = ClickHouseStore(bff.settings.clickhouse_url, SCHEMA_DIR)
    statements = [statement for path in sorted(SCHEMA_DIR.glob("*.sql")) for statement in _statements(path.read_text())]
    assert len(statements) >= 6
    for _ in range(2):
        for statement in statements:
            store.call(lambda client, sql=statement: client.command(sql))
    tables = {row["name"] for row in store.query("SELECT name FROM system.tables WHERE database = 'otel'", {})}
    assert {"otel_traces", "gateway_requests", "gateway_requests_mv", "gateway_usage_daily", "gateway_usage_daily_mv"} <= tables
    columns = [row["name"] for row in store.query("SELECT name FROM system.columns WHERE database = 'otel' AND table = 'otel_traces' ORDER BY position", {})]
    flat = [column for column in columns if not column.startswith(("Events.", "Links."))]
    assert [c for c in COLUMNS if "." not in c] == [c for c in flat if c in COLUMNS], "the exporter's column order"
