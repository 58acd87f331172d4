"""The compose deployment, checked without Docker: docker-compose.yml (Debian's docker-compose),
config/kong.yml (Debian's decK plus our own rules), config/otel-collector.yaml against the
schema files, and the schema files themselves on the embedded engine."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from bff.clickhouse import ClickHouseStore, _statements
from bff.request_context import REQUEST_ID_HEADER
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
    expected = {"kong", "bff", "litellm", "otel-collector", "clickhouse", "open-webui", "ollama", "comfyui"}
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


def test_bff_image_is_multi_stage_non_root_with_the_chart_assets() -> None:
    dockerfile = (ROOT / "backend" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+:(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 3 and all(re.match(r"\d", tag) for tag in stages), "pinned base images, several stages"
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    assert "package-lock.json" in dockerfile and "npm ci" in dockerfile
    assert "monitoring/node_modules" in dockerfile and "HEALTHCHECK" in dockerfile


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
    used = {c for p in service["pipelines"].values() for kind in ("receivers", "processors", "exporters") for c in p.get(kind, [])}
    defined = {c for kind in ("receivers", "processors", "exporters") for c in collector[kind]}
    assert defined == used, f"defined but unused: {defined - used}"
    assert set(collector["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "health_check" in service["extensions"]


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
