"""Error handling: every failure leaves as RFC 9457 problem+json with a stable code."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.exceptions
from aiohttp import web

from broker.errors import BrokerError

from . import problems
from .problems import Problem

log = logging.getLogger("backupplus.api")

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
    return Problem(_BY_CODE.get(exc.code, problems.INTERNAL_ERROR), exc.detail, headers=headers, **extra)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response(request.path)
    except BrokerError as exc:
        return problem_from_domain(exc).response(request.path)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError) as exc:
        log.warning("Redis unavailable on %s %s: %s", request.method, request.path, exc)
        return Problem(
            problems.STORE_UNAVAILABLE, "The broker cannot reach its store; retry shortly", headers={"Retry-After": "2"}
        ).response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        problem = _HTTP_STATUS.get(exc.status)
        if problem is None:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return Problem(problem, exc.reason if exc.status != 404 else f"No route for {request.path}", headers=headers).response(request.path)
    except Exception:
        log.exception("Unhandled error on %s %s", request.method, request.path)
        return Problem(problems.INTERNAL_ERROR).response(request.path)
