"""The OpenAPI 3.1 document, derived from the app's router.

Each handler declares its documentation next to its code with ``@doc``; ``openapi_document`` walks the
router, so the document lists exactly the routes the app serves. Schemas come from the pydantic models
that validate the requests, error responses from ``api.problems``. A route that is neither documented
nor under ``UNDOCUMENTED`` stops the document from being built (and the app from starting).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar, get_args, get_origin

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from . import models, problems
from .appkeys import OPENAPI, SETTINGS
from .problems import PROBLEM_JSON, ProblemType

# Routes outside the public HTTP interface, left out of the document: the pages' static files. (The
# media node's signed internal calls are not on the public listener at all: media/internal.py.)
UNDOCUMENTED = ("/static",)

Auth = Literal["operator", "operator or stream ticket", "operator or join token", "operator or participant token", "none"]
_AUTH_TEXT = {
    "operator": "Auth: operator bearer token.",
    "operator or stream ticket": "Auth: operator bearer token, or `?ticket=` with a stream ticket from "
    "POST /v1/events/tickets (an EventSource cannot send headers; the operator token never goes in a URL).",
    "operator or join token": "Auth: operator or join token (bearer).",
    "operator or participant token": "Auth: operator or the participant's own token (bearer); its conference's "
    "join token answers 403.",
    "none": "No authentication.",
}
# Every authenticated route can answer these; a JSON body and query parameters add their own.
_AUTHENTICATED = (problems.UNAUTHORIZED, problems.FORBIDDEN, problems.STORE_UNAVAILABLE, problems.NOT_FOUND)
_WITH_BODY = (problems.MALFORMED_JSON, problems.VALIDATION_FAILED, problems.BODY_TOO_LARGE)
_REF = "#/components/schemas/{model}"
_DOC_ATTR = "__openapi_doc__"

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Content:
    """A response body that is not a pydantic model: its media type and JSON Schema."""

    media_type: str
    schema: Mapping[str, Any]


HTML = Content("text/html", {"type": "string"})
EVENT_STREAM = Content("text/event-stream", {"type": "string", "description": "Server-sent events"})


@dataclass(frozen=True)
class Param:
    """A query or header parameter; ``type`` is anything pydantic can describe (a Literal, datetime…)."""

    name: str
    where: Literal["query", "header"]
    type: Any

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "in": self.where, "schema": TypeAdapter(self.type).json_schema()}


def query(name: str, type_: Any) -> Param:
    return Param(name, "query", type_)


def header(name: str, type_: Any) -> Param:
    return Param(name, "header", type_)


@dataclass(frozen=True)
class RouteDoc:
    summary: str
    auth: Auth
    responses: Mapping[int, Any]  # status -> model class, list[model], Content, None (no body), or a tuple of them
    body: type[BaseModel] | None = None
    errors: tuple[ProblemType, ...] = ()
    params: tuple[Param, ...] = ()


def doc(
    summary: str,
    *,
    auth: Auth,
    responses: Mapping[int, Any],
    body: type[BaseModel] | None = None,
    errors: Iterable[ProblemType] = (),
    params: Iterable[Param] = (),
) -> Callable[[H], H]:
    """Documents a handler: what it does, who may call it, what it takes and what it answers.
    ``errors`` are the route's own problem codes; the ones every authenticated route or JSON body
    can meet are added by the document."""
    for status, reply in responses.items():
        if not _describable(reply):
            raise TypeError(f"@doc({summary!r}): the {status} reply must be a model, list[model], Content, None "
                            "or a tuple of them (one per media type)")
    spec = RouteDoc(summary, auth, dict(responses), body, tuple(errors), tuple(params))

    def mark(handler: H) -> H:
        setattr(handler, _DOC_ATTR, spec)
        return handler

    return mark


def doc_of(handler: Any) -> RouteDoc | None:
    return getattr(handler, _DOC_ATTR, None)


class UndocumentedRoute(Exception):
    """A route of the router has no ``@doc`` and is not under ``UNDOCUMENTED``."""


@dataclass(frozen=True)
class DocumentedRoute:
    method: str
    path: str
    handler: Callable[..., Any]
    doc: RouteDoc


def is_undocumented(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in UNDOCUMENTED)


def documented_routes(router: web.UrlDispatcher) -> list[DocumentedRoute]:
    """Every route of the router but HEAD and ``UNDOCUMENTED``, with its documentation."""
    found, missing = [], []
    for route in router.routes():
        if route.method == "HEAD" or route.resource is None or is_undocumented(route.resource.canonical):
            continue
        path, spec = route.resource.canonical, doc_of(route.handler)
        if spec is None:
            missing.append(f"{route.method} {path} ({getattr(route.handler, '__qualname__', route.handler)})")
        else:
            found.append(DocumentedRoute(route.method, path, route.handler, spec))
    if missing:
        raise UndocumentedRoute("routes without @doc (api/openapi.py): " + ", ".join(missing))
    return found


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _is_list(reply: Any) -> bool:
    return get_origin(reply) is list


def _describable(reply: Any) -> bool:
    if isinstance(reply, tuple):
        return bool(reply) and all(r is not None and _describable(r) for r in reply)
    return reply is None or isinstance(reply, Content) or _is_model(reply) or (_is_list(reply) and _is_model(get_args(reply)[0]))


def _models(routes: list[DocumentedRoute]) -> list[tuple[type[BaseModel], Literal["validation", "serialization"]]]:
    bodies = {r.doc.body for r in routes if r.doc.body is not None}
    flat = [m for r in routes for reply in r.doc.responses.values()
            for m in (reply if isinstance(reply, tuple) else (reply,))]
    replies = [get_args(m)[0] if _is_list(m) else m for m in flat]
    used = {m for m in [*bodies, *replies] if _is_model(m)}
    used.add(models.ProblemDetails)
    return [(m, "validation" if m in bodies else "serialization") for m in sorted(used, key=lambda m: m.__name__)]


def _reply(status: int, reply: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if reply is None:
        return out
    if isinstance(reply, tuple):  # one body per media type (JSON, or an event stream on request)
        out["content"] = {k: v for r in reply for k, v in _reply(status, r)["content"].items()}
        return out
    if isinstance(reply, Content):
        media_type, schema = reply.media_type, dict(reply.schema)
    elif _is_list(reply):
        media_type, schema = "application/json", {"type": "array", "items": {"$ref": _REF.format(model=get_args(reply)[0].__name__)}}
    else:
        media_type, schema = "application/json", {"$ref": _REF.format(model=reply.__name__)}
    out["content"] = {media_type: {"schema": schema}}
    return out


def _problems(spec: RouteDoc) -> list[ProblemType]:
    found = set(spec.errors)
    if spec.auth != "none":
        found.update(_AUTHENTICATED)
    if spec.body is not None:
        found.update(_WITH_BODY)
    if any(p.where == "query" for p in spec.params):
        found.add(problems.VALIDATION_FAILED)
    return sorted(found, key=lambda p: p.code)


def _operation(route: DocumentedRoute) -> dict[str, Any]:
    spec = route.doc
    op: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": route.handler.__name__.lstrip("_"),
        "description": _AUTH_TEXT[spec.auth],
        "security": [] if spec.auth == "none" else [{"bearer": []}],
        "responses": {str(status): _reply(status, reply) for status, reply in spec.responses.items()},
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", route.path)
    ] + [p.spec() for p in spec.params]
    if params:
        op["parameters"] = params
    if spec.body is not None:
        ref = {"$ref": _REF.format(model=spec.body.__name__)}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    for problem in _problems(spec):
        entry = op["responses"].setdefault(str(problem.status), {"description": ""})
        entry.setdefault("content", {})[PROBLEM_JSON] = {"schema": {"$ref": _REF.format(model="ProblemDetails")}}
        entry["description"] = (entry["description"] + f" `{problem.code}`: {problem.title}.").strip()
    return op


def openapi_document(router: web.UrlDispatcher, base_url: str) -> dict[str, Any]:
    routes = documented_routes(router)
    ids = [r.handler.__name__.lstrip("_") for r in routes]
    if len(ids) != len(set(ids)):  # the operationId
        raise ValueError(f"two documented handlers share a name: {sorted(ids)}")
    _, schemas = models_json_schema(_models(routes), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Backup+ broker",
            "version": "1.0.0",
            "description": "Substitute conferencing capacity (8 web/audio + 10 video ports at 480p per outage) "
            "while a client's own conference server is down. Errors are RFC 9457 problem+json with a stable `code`.",
        },
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def publish_openapi(app: web.Application) -> None:
    """``on_startup``: builds the document once the router holds every route (an undocumented one fails here)."""
    app[OPENAPI] = openapi_document(app.router, app[SETTINGS].base_url)
