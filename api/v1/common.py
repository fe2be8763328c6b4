"""What every /v1 handler uses: JSON in and out, who is calling, the broker."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from broker.service import Broker

from .. import models, problems
from ..appkeys import BROKER, KEYS, SETTINGS
from ..auth import Principal, authenticate, sign_join_token
from ..problems import Problem

M = TypeVar("M", bound=BaseModel)
MAX_IDEMPOTENCY_KEY = 200


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str), status=status, content_type="application/json", headers=headers
    )


async def read_json(request: web.Request) -> Any:
    """The body as JSON (400 malformed_json when it is not, or when there is none)."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(problems.MALFORMED_JSON, f"The body is not valid JSON: {exc}") from None
    if data is None:
        raise Problem(problems.MALFORMED_JSON, "A JSON body is required")
    return data


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(problems.VALIDATION_FAILED, errors=models.field_errors(exc)) from None


async def read_model(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= MAX_IDEMPOTENCY_KEY):
        raise Problem(problems.VALIDATION_FAILED, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return key


def principal(request: web.Request) -> Principal:
    return authenticate(request, request.app[SETTINGS].operator_digests, request.app[KEYS].ring)


def broker(request: web.Request) -> Broker:
    return request.app[BROKER]


def operator(request: web.Request) -> Broker:
    principal(request).require_operator()
    return request.app[BROKER]


def with_join_link(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    """A conference as an operator sees it: with its join token and link."""
    token = sign_join_token(request.app[KEYS].signing_key("join"), doc["id"])
    return {**doc, "join_token": token, "join_url": f"{request.app[SETTINGS].base_url}/join/{token}"}
