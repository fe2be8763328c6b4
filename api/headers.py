"""Security and cache headers on every response, by default: a new route or page gets them without
being listed anywhere.

Strict CSP (no inline script or style, no eval), ``Referrer-Policy: no-referrer`` (a join link is a
credential: it must not leak in a Referer), nosniff and no framing. HTML is ``no-store`` (the join
page's URL carries the token); static files revalidate (``no-cache`` + aiohttp's ETag/Last-Modified).
A handler that sets one of these headers itself keeps its own value.
"""

from __future__ import annotations

from aiohttp import web

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; media-src 'self' blob: mediastream:; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(), geolocation=()",
}


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers everywhere, the cache policy by kind of body."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if isinstance(response, web.FileResponse):
        response.headers.setdefault("Cache-Control", "no-cache")
    elif response.content_type == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Pragma", "no-cache")  # HTTP/1.0 caches and history sync


def install(app: web.Application) -> None:
    """Adds the headers to every response of ``app`` (once, however often it is called)."""
    if _add_headers not in app.on_response_prepare:
        app.on_response_prepare.append(_add_headers)
