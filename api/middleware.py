"""Error handling: every failure leaves as RFC 9457 problem+json with a stable code.

Every request gets a request id (a sane ``X-Request-Id`` from the caller, else a new one): it is bound
for the log lines of the request (``infra.logcontext``, with the outage, conference or participant
named in the path), sent back in the ``X-Request-Id`` header and in every problem body. Server-side
failures (5xx) answer a stable, generic text; what went wrong goes to the log under that id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker import ids
from broker.errors import BrokerError
from infra import logcontext
from infra.redisconn import STORE_UNAVAILABLE

from . import problems
from .appkeys import TELEMETRY
from .problems import Problem

log = logging.getLogger("backupplus.api")

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_KEY = web.RequestKey("request_id", str)
_CALLER_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")

_BY_CODE = {p.code: p for p in problems.ALL}
_HTTP_STATUS = {
    404: problems.NOT_FOUND,
    405: problems.METHOD_NOT_ALLOWED,
    413: problems.BODY_TOO_LARGE,
    415: problems.UNSUPPORTED_MEDIA_TYPE,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_from_domain(exc: BrokerError) -> Problem:
    extra = dict(exc.extra)
    headers = {}
    retry_after = extra.pop("retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    kind = _BY_CODE.get(exc.code, problems.INTERNAL_ERROR)
    detail = exc.detail
    if kind.status >= 500:  # the text may come from an exception below: log it, answer the title
        log.warning("%s: %s", exc.code, exc.detail or type(exc).__name__)
        detail = None
    return Problem(kind, detail, headers=headers, **extra)


def _route_ids(request: web.Request) -> dict[str, str | None]:
    """The outage, conference or participant the path names (by the id's shape)."""
    ident = request.match_info.get("id", "")
    if ids.is_outage_id(ident):
        return {"outage": ident}
    outage = ids.outage_of(ident)
    if outage is None:
        return {}
    if ids.is_conference_id(ident):
        return {"outage": outage, "conference": ident}
    return {"outage": outage, "participant": ident}


def _route(request: web.Request) -> str:
    """The route's template (``/join/{token}``), never the raw path: paths can hold tokens."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "(no route)"


def request_id_of(request: web.Request) -> str | None:
    return request.get(_REQUEST_ID_KEY)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streamed and static ones too, names its request."""
    rid = request_id_of(request)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _CALLER_ID.match(given) else uuid.uuid4().hex
    request[_REQUEST_ID_KEY] = rid
    with logcontext.scope(request_id=rid, **_route_ids(request)):
        problem = await _problem_of(request, handler)
        if isinstance(problem, web.StreamResponse):
            return problem
        problem.extra["request_id"] = rid
        return problem.response(request.path)


async def _problem_of(request: web.Request, handler: Handler) -> web.StreamResponse | Problem:
    try:
        return await handler(request)
    except Problem as exc:
        return exc
    except BrokerError as exc:
        return problem_from_domain(exc)
    except STORE_UNAVAILABLE as exc:
        log.warning("Redis unavailable on %s %s: %s", request.method, _route(request), exc)
        request.app[TELEMETRY].store.errors.inc()
        return Problem(
            problems.STORE_UNAVAILABLE, "The broker cannot reach its store; retry shortly", headers={"Retry-After": "2"}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        problem = _HTTP_STATUS.get(exc.status)
        if problem is None:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return Problem(problem, exc.reason if exc.status != 404 else f"No route for {request.path}", headers=headers)
    except Exception:
        log.exception("Unhandled error on %s %s", request.method, _route(request))
        return Problem(problems.INTERNAL_ERROR)
