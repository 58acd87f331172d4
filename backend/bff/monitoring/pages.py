"""GET /monitoring/: the monitoring pages, their static files, and who is looking at them.

Every link and API call in the pages is relative, so they work behind a path prefix
(Kong serves the BFF under /gateway/).
"""

import html
from string import Template
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from bff.errors import ApiError, forbidden, not_found, unavailable
from bff.monitoring.assets import ASSETS, PACKAGE_DIR
from bff.monitoring.models import Scope, Viewer
from bff.page_headers import SECURITY_HEADERS, content_security_policy
from bff.pipeline.admission import admit
from bff.policy.model import Permission
from bff.services import Services

router = APIRouter(prefix="/monitoring", tags=["monitoring"])

PAGE = Template((PACKAGE_DIR / "templates" / "page.html").read_text(encoding="utf-8"))
SIGN_IN = "Sign in to Open-WebUI first, then reload this page."
PAGE_HEADERS = {"Content-Security-Policy": content_security_policy(), **SECURITY_HEADERS}


async def current_viewer(request: Request) -> Viewer:
    services: Services = request.app.state.services
    principal = await admit(services, request, request.state.call)
    services.access.require(principal, Permission.monitoring)
    if principal.user_id is None or principal.role is None:
        raise forbidden("the monitoring pages need a signed-in user", "user_identity_required")
    scope: Scope = "all" if services.access.has(principal, Permission.usage_all) else "own"
    return Viewer(user_id=principal.user_id, name=principal.name, role=principal.role, scope=scope)


def _notice(error: ApiError) -> tuple[str, str]:
    if error.status == 401:
        detail = (
            f"The gateway found no valid Open-WebUI session: {error.message}. "
            "You can also paste an Open-WebUI token below; it is kept in this browser tab only."
        )
        return SIGN_IN, detail
    if error.status == 403:
        return "You may not open the monitoring pages.", error.message
    return "The monitoring pages are unavailable right now.", error.message


def render_page(status: int, title: str = "", detail: str = "", extra_headers: dict[str, str] | None = None) -> HTMLResponse:
    body = PAGE.substitute(
        status=status,
        notice_hidden="hidden" if status == 200 else "",
        form_hidden="" if status == 401 else "hidden",
        title=html.escape(title),
        detail=html.escape(detail),
    )
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, **(extra_headers or {})})


@router.get("", include_in_schema=False)
async def add_slash(request: Request) -> RedirectResponse:
    query = request.url.query
    return RedirectResponse("monitoring/" + (f"?{query}" if query else ""), status_code=307)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    try:
        await current_viewer(request)
    except ApiError as error:
        request.state.call.error_type = error.code
        title, detail = _notice(error)
        return render_page(error.status, title, detail, error.headers)
    return render_page(200)


@router.get("/viewer", response_model=Viewer, summary="Who is looking at the monitoring pages, and whose usage they see")
async def viewer(request: Request) -> Viewer:
    return await current_viewer(request)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: Annotated[str, Path(max_length=64)]) -> FileResponse:
    asset = ASSETS.get(name)
    if asset is None:
        raise not_found(f"no monitoring asset '{name}'")
    if not asset.path.is_file():
        raise unavailable(
            f"the monitoring asset '{name}' is not installed: run scripts/dev.sh or 'npm ci' in backend/bff/monitoring",
            "monitoring_assets_missing",
        )
    return FileResponse(asset.path, media_type=asset.media_type, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
