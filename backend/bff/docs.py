"""GET /docs: Swagger UI from the pinned swagger-ui-dist, and an OpenAPI schema that says what the BFF does.

The page loads nothing from a CDN (air-gapped deployments, OFFLINE_MODE=true): its script,
stylesheet and icon come from swagger-ui-dist in backend/bff/monitoring/node_modules (npm,
pinned by package-lock.json), through relative URLs, so it works behind PUBLIC_PATH_PREFIX too.
Its Content-Security-Policy allows only the BFF itself and, by hash, the page's one inline
script (Swagger UI's initialisation, as FastAPI writes it).

The schema is FastAPI's, corrected where the BFF does things its own way:
- the BFF authenticates in its own dependency (pipeline/admission.py), not through FastAPI's
  security classes, so one HTTP bearer scheme is declared here and required by every operation
  but the health probes: Swagger UI then shows "Authorize" and "Try it out" sends the token;
- invalid parameters and bodies are answered 400 in the gateway's error shape
  (errors.ErrorResponse); FastAPI's 422 "Validation Error", never sent, is removed.
"""

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from bff.errors import not_found, unavailable
from bff.monitoring.assets import PACKAGE_DIR, Asset
from bff.page_headers import SECURITY_HEADERS, content_security_policy
from bff.routes import health

DOCS_PATH = "/docs"
SWAGGER_UI_DIST = PACKAGE_DIR / "node_modules" / "swagger-ui-dist"
ASSETS: dict[str, Asset] = {
    "swagger-ui-bundle.js": Asset(SWAGGER_UI_DIST / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": Asset(SWAGGER_UI_DIST / "swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": Asset(SWAGGER_UI_DIST / "favicon-32x32.png", "image/png"),
}
# Relative to the page (<prefix>/docs), so the prefix Kong strips is kept.
ASSET_BASE = DOCS_PATH.lstrip("/") + "/assets/"
INSTALL_HINT = "run scripts/dev.sh, or 'npm ci' in backend/bff/monitoring (the Docker image has them)"

SECURITY_SCHEME = "bearer"
SECURITY_SCHEME_DESCRIPTION = (
    "An Open-WebUI session token or API key (sk-...). Open-WebUI's backend uses the BFF service key "
    "instead, with the user in a signed X-OpenWebUI-User-Jwt header."
)
# FastAPI's validation error documentation, replaced by the gateway's 400.
VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
VALIDATION_400 = {
    "body": "invalid JSON or body (the message names the field)",
    "parameters": "invalid parameter (the message names it)",
}
AUTH_STATUSES = ("401", "403")

SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "validatorUrl": None,  # no badge fetched from validator.swagger.io
    "persistAuthorization": False,  # the token stays in the tab's memory only
    "displayRequestDuration": True,
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def _csp(page: str) -> str:
    """Only the BFF's own files, plus the page's inline scripts by their hashes (no 'unsafe-inline' or 'unsafe-eval')."""
    digests = (hashlib.sha256(script.encode()).digest() for script in _INLINE_SCRIPT.findall(page))
    script_src = " ".join(["script-src 'self'", *(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests)])
    return content_security_policy(script_src)


def _missing_page(missing: list[str]) -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>API docs unavailable</title></head>'
        "<body><h1>The API docs are unavailable</h1>"
        f"<p>Swagger UI's files are not installed ({html.escape(', '.join(missing))}): {html.escape(INSTALL_HINT)}.</p>"
        '<p>The OpenAPI schema itself is at <a href="openapi.json">openapi.json</a>.</p></body></html>'
    )
    headers = {
        **SECURITY_HEADERS,
        "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    }
    return HTMLResponse(body, status_code=503, headers=headers)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    missing = [name for name, asset in ASSETS.items() if not asset.path.is_file()]
    if missing:
        request.state.call.error_type = "docs_assets_missing"
        return _missing_page(missing)
    app: FastAPI = request.app
    root_path = str(request.scope.get("root_path", "")).rstrip("/")
    page = get_swagger_ui_html(
        openapi_url=root_path + str(app.openapi_url),
        title=f"{app.title} - Swagger UI",
        swagger_js_url=ASSET_BASE + "swagger-ui-bundle.js",
        swagger_css_url=ASSET_BASE + "swagger-ui.css",
        swagger_favicon_url=ASSET_BASE + "favicon.png",
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )
    text = bytes(page.body).decode()
    return HTMLResponse(text, headers={**SECURITY_HEADERS, "Content-Security-Policy": _csp(text)})


@router.get(DOCS_PATH + "/assets/{name}")
async def swagger_ui_asset(name: Annotated[str, Path(max_length=64)]) -> FileResponse:
    asset = ASSETS.get(name)
    if asset is None:
        raise not_found(f"no docs asset '{name}'")
    if not asset.path.is_file():
        raise unavailable(f"the docs asset '{name}' is not installed: {INSTALL_HINT}", "docs_assets_missing")
    return FileResponse(
        asset.path, media_type=asset.media_type, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    )


def _public_paths() -> set[str]:
    """Operations anyone may call: the health probes (every other route authenticates first)."""
    return {str(getattr(route, "path", "")) for route in health.router.routes}


def amend(schema: dict[str, Any], public_paths: set[str]) -> dict[str, Any]:
    """The bearer scheme on every authenticating operation, and the gateway's 400 instead of 422."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": SECURITY_SCHEME_DESCRIPTION,
    }
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if path in public_paths:
                operation.pop("security", None)
                for status in AUTH_STATUSES:  # nobody is refused here
                    responses.pop(status, None)
            else:
                operation["security"] = [{SECURITY_SCHEME: []}]
            responses.pop("422", None)
            if operation.get("parameters") or "requestBody" in operation:
                bad_request = responses.setdefault("400", {"content": {"application/json": {"schema": _ref("ErrorResponse")}}})
                if bad_request.get("description") in (None, "Bad Request"):
                    bad_request["description"] = VALIDATION_400["body" if "requestBody" in operation else "parameters"]
    schemas: dict[str, Any] = components.get("schemas", {})
    for name in VALIDATION_SCHEMAS:
        definition = schemas.pop(name, None)
        if definition is not None and json.dumps(_ref(name)["$ref"]) in json.dumps(schema):
            schemas[name] = definition  # still used elsewhere: keep it
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def install(app: FastAPI) -> None:
    """Serves /docs from the local assets and replaces app.openapi with the amended schema.

    Build the app with FastAPI(docs_url=None, redoc_url=None): FastAPI's own pages load from a CDN.
    """
    app.include_router(router)
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = amend(generate(), _public_paths())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
