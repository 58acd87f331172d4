"""The files the monitoring pages load: our own static files and the pinned Chart.js build."""

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
CHART_JS_DIST = PACKAGE_DIR / "node_modules" / "chart.js" / "dist"


@dataclass(frozen=True)
class Asset:
    path: Path
    media_type: str


ASSETS: dict[str, Asset] = {
    "monitoring.js": Asset(STATIC_DIR / "monitoring.js", "text/javascript; charset=utf-8"),
    "monitoring.css": Asset(STATIC_DIR / "monitoring.css", "text/css; charset=utf-8"),
    "chart.umd.min.js": Asset(CHART_JS_DIST / "chart.umd.min.js", "text/javascript; charset=utf-8"),
}
