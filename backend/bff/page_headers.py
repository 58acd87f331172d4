"""Headers of the BFF's own HTML pages (monitoring, API docs): only the BFF's own files, no
framing, no referrer, no caching."""

_CSP_AFTER_SCRIPTS = (
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def content_security_policy(script_src: str = "script-src 'self'") -> str:
    return "; ".join(["default-src 'none'", script_src, *_CSP_AFTER_SCRIPTS])
