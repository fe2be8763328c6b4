"""The OpenAPI document is derived from the router: every route is documented, every documented
route exists, and a new route shows up (or stops the app) without touching anything but its handler."""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from openapi_spec_validator import validate

import api.ops
import api.pages
import api.v1
from api import models, problems
from api.app import create_app
from api.openapi import UNDOCUMENTED, UndocumentedRoute, doc, doc_of, is_undocumented, openapi_document, query
from backupplus.media_plane import media_plane
from infra.settings import Settings

ROUTE_MODULES: tuple[ModuleType, ...] = (*api.v1.MODULES, api.ops, api.pages)
METHODS = ("get", "put", "post", "delete", "patch")


def _full_app() -> web.Application:
    """The app as `backupplus serve` builds it (pages and the in-process media node).
    Building it starts nothing: Redis and the node come with the cleanup contexts, at startup."""
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0"), media_plane=media_plane(in_process_node=True))


def _served(app: web.Application) -> set[tuple[str, str]]:
    return {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }


def test_every_route_is_documented() -> None:
    app = _full_app()
    served = _served(app)
    document = openapi_document(app.router, "http://test")
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops if m in METHODS}
    missing = {(m, p) for m, p in served if not is_undocumented(p)} - documented
    assert not missing, f"served but not in /openapi.json: {sorted(missing)}"
    # The exclusions are few and real: each one names routes this app serves.
    for prefix in UNDOCUMENTED:
        assert any(p == prefix or p.startswith(prefix + "/") for _, p in served), prefix
    assert ("get", "/static") in served
    assert not [p for _, p in served if p.startswith("/internal")]  # on a listener of its own (media/internal.py)


async def test_every_documented_route_exists() -> None:
    app = _full_app()
    document = openapi_document(app.router, "http://test")
    for path, ops in document["paths"].items():
        concrete = re.sub(r"\{\w+\}", "x1", path)
        for method in ops:
            match = await app.router.resolve(make_mocked_request(method.upper(), concrete))
            assert match.http_exception is None, f"{method.upper()} {path} is documented but not served"
            assert match.route.resource is not None and match.route.resource.canonical == path
            assert doc_of(match.route.handler) is not None
    # A handler that carries @doc but that no route serves would be documentation of nothing.
    handlers = {r.handler for r in app.router.routes()}
    for module in ROUTE_MODULES:
        for name, value in vars(module).items():
            if callable(value) and doc_of(value) is not None:
                assert value in handlers, f"{module.__name__}.{name} has @doc but no route"


def test_the_full_document_is_valid_openapi_3_1() -> None:
    app = _full_app()
    document = openapi_document(app.router, "http://test")
    validate(document)
    join = document["paths"]["/join/{token}"]["get"]
    assert join["security"] == [] and set(join["responses"]["404"]["content"]) == {
        "text/html",
        problems.PROBLEM_JSON,
    }
    admit = document["paths"]["/v1/conferences/{id}/participants"]["post"]
    assert admit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ParticipantCreate")
    assert "`capacity_exhausted`" in admit["responses"]["409"]["description"]
    assert "`malformed_json`" in admit["responses"]["400"]["description"]  # added for every JSON body
    assert "`unauthorized`" in admit["responses"]["401"]["description"]  # added for every authenticated route
    assert admit["parameters"][0] == {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


async def test_a_new_route_is_documented_by_its_decorator_alone(redis_url: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    @doc(
        "Count a conference's plants",
        auth="operator",
        responses={200: models.Health},
        errors=[problems.CONFERENCE_NOT_FOUND],
        params=[query("colour", models.Kind)],
    )
    async def count_plants(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = create_app(Settings(redis_url=redis_url), pages=False)
    app.router.add_get("/v1/conferences/{id}/plants", count_plants)
    async with TestClient(TestServer(app)) as client:
        document = await (await client.get("/openapi.json")).json()
    op = document["paths"]["/v1/conferences/{id}/plants"]["get"]
    assert op["operationId"] == "count_plants" and op["summary"] == "Count a conference's plants"
    assert op["parameters"][1] == {"name": "colour", "in": "query", "schema": {"enum": ["audio", "video"], "type": "string"}}
    assert set(op["responses"]) == {"200", "401", "403", "404", "422", "503"}
    assert "`conference_not_found`" in op["responses"]["404"]["description"]
    validate(document)


async def test_an_undocumented_route_stops_the_app(redis_url: str) -> None:
    async def secret_door(request: web.Request) -> web.Response:
        return web.json_response({})

    app = create_app(Settings(redis_url=redis_url), pages=False)
    app.router.add_post("/v1/secret-door", secret_door)
    with pytest.raises(UndocumentedRoute, match=r"POST /v1/secret-door \(.*secret_door\)"):
        openapi_document(app.router, "http://test")
    runner = web.AppRunner(app)
    with pytest.raises(UndocumentedRoute):
        await runner.setup()  # on_startup builds the document
    await runner.cleanup()


def test_a_reply_the_document_cannot_describe_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match="the 200 reply"):
        doc("A reply as a bare dict", auth="none", responses={200: dict})
