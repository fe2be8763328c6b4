"""Security headers by default: a page added anywhere gets the CSP and the others without being listed."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.headers import CSP, SECURITY_HEADERS
from api.openapi import HTML, doc
from infra.settings import Settings

from .api_helpers import AUTH, OPERATOR


@doc("A page nobody listed anywhere", auth="none", responses={200: HTML})
async def brand_new_page(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><title>new</title><p>hello</p>", content_type="text/html")


@doc("A page that sets its own cache policy", auth="none", responses={200: HTML})
async def cacheable_page(request: web.Request) -> web.Response:
    return web.Response(text="<p>hi</p>", content_type="text/html", headers={"Cache-Control": "max-age=60"})


async def test_a_new_html_route_gets_the_page_headers(redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, operator_tokens=frozenset({OPERATOR})), pages=False)
    app.router.add_get("/somewhere/new", brand_new_page)
    app.router.add_get("/somewhere/cached", cacheable_page)
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/somewhere/new")
        assert page.status == 200 and page.content_type == "text/html"
        for name, value in SECURITY_HEADERS.items():
            assert page.headers[name] == value, name
        directives = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";"))
        assert directives["script-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["Cache-Control"] == "no-store" and page.headers["Pragma"] == "no-cache"
        # A handler's own cache policy is kept; the security headers are still added.
        cached = await client.get("/somewhere/cached")
        assert cached.headers["Cache-Control"] == "max-age=60" and cached.headers["Content-Security-Policy"] == CSP
        # JSON answers and errors carry the security headers too, without the pages' cache policy.
        for resp in (await client.get("/v1/outages", headers=AUTH), await client.get("/nowhere")):
            assert resp.headers["X-Content-Type-Options"] == "nosniff", resp.status
            assert resp.headers["Content-Security-Policy"] == CSP
            assert "Cache-Control" not in resp.headers

