"""Outages (operator): declare a client's server down, acknowledge, set a planned end, restore; the SLA
clock for any moment."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from broker import errors, sla
from broker.outages import Declaration, iso

from .. import models, problems
from ..livefeed import serve_feed
from ..openapi import EVENT_STREAM, doc, header, query
from ..problems import Problem
from .common import idempotency_key, json_response, operator, read_json, read_model

routes = web.RouteTableDef()
_DECLARE_ERRORS = [
    problems.CONTRACT_NOT_FOUND, problems.NOT_ELIGIBLE, problems.OUTAGE_ALREADY_ACTIVE, problems.INVALID_REPORTED_AT,
    problems.IDEMPOTENCY_KEY_REUSED,
]


def _declaration(raw: Any) -> Declaration:
    """The body of a declare, validated (422 with the field errors, as a domain error so that the
    ticket records the refusal)."""
    try:
        body = models.OutageDeclare.model_validate(raw)
    except ValueError as exc:
        raise errors.ValidationFailed(
            "The request lacks what clause 3-3 asks of every call, or has invalid fields",
            errors=models.field_errors(exc),
        ) from None
    return Declaration(body.contract, body.serial, body.ticket.model_dump(), body.reported_at)


@routes.post("/v1/outages")
@doc(
    "Declare a client's server down (every request gets a ticket, the refused ones too)",
    auth="operator",
    body=models.OutageDeclare,
    responses={201: models.Outage},
    errors=_DECLARE_ERRORS,
    params=[header("Idempotency-Key", str)],
)
async def declare_outage(request: web.Request) -> web.Response:
    broker = operator(request)
    key = idempotency_key(request)
    raw = await read_json(request)
    outage, created = await broker.outages.intake(raw, _declaration, idempotency_key=key)
    headers = {"Location": f"/v1/outages/{outage['id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(outage, status=201, headers=headers)


@routes.get("/v1/outages")
@doc(
    "List outages",
    auth="operator",
    responses={200: list[models.Outage]},
    params=[query("state", models.OutageState)],
)
async def list_outages(request: web.Request) -> web.Response:
    broker = operator(request)
    state = request.query.get("state")
    if state is not None and state not in ("active", "restored"):
        raise Problem(
            problems.VALIDATION_FAILED,
            errors=[{"loc": ["query", "state"], "msg": "must be active or restored", "type": "enum"}],
        )
    return json_response(await broker.outages.all(state))


@routes.get("/v1/outages/{id}")
@doc("Read an outage", auth="operator", responses={200: models.Outage}, errors=[problems.OUTAGE_NOT_FOUND])
async def get_outage(request: web.Request) -> web.Response:
    return json_response(await operator(request).outages.get(request.match_info["id"]))


@routes.post("/v1/outages/{id}/acknowledge")
@doc(
    "The hotline takes charge (recorded once: a second call returns the first)",
    auth="operator",
    body=models.Acknowledge,
    responses={200: models.Outage},
    errors=[problems.OUTAGE_NOT_FOUND],
)
async def acknowledge_outage(request: web.Request) -> web.Response:
    broker = operator(request)
    body = await read_model(request, models.Acknowledge)
    return json_response(await broker.outages.acknowledge(request.match_info["id"], body.by))


@routes.post("/v1/outages/{id}/restore")
@doc(
    "The client's server is back: every participant disconnected, every port released",
    auth="operator",
    responses={200: models.Outage},
    errors=[problems.OUTAGE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE],
)
async def restore_outage(request: web.Request) -> web.Response:
    broker = operator(request)
    by = None
    if request.can_read_body:
        by = (await read_model(request, models.Restore)).by
    return json_response(await broker.outages.restore(request.match_info["id"], by or ""))


@routes.post("/v1/outages/{id}/extend")
@doc(
    "Set a planned end of Backup+ (null clears it); participants are warned 10 minutes before",
    auth="operator",
    body=models.OutageExtend,
    responses={200: models.Outage},
    errors=[problems.OUTAGE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE, problems.INVALID_WINDOW],
)
async def extend_outage(request: web.Request) -> web.Response:
    broker = operator(request)
    body = await read_model(request, models.OutageExtend)
    return json_response(await broker.outages.set_planned_end(request.match_info["id"], body.window_ends_at))


def _reported_at(raw: str | None, default: datetime) -> datetime:
    if raw is None:
        return default
    reported_at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    if reported_at.tzinfo is None:
        raise ValueError("no offset")
    if not 2000 <= reported_at.year <= 2100:
        raise ValueError("out of range")
    return reported_at


@routes.get("/v1/sla")
@doc(
    "The SLA clock for a call taken at reported_at (the hotline's answer to: if I take this call now)",
    auth="operator",
    responses={200: models.SlaAnswer},
    params=[query("reported_at", datetime), query("priority", models.Priority)],
)
async def get_sla(request: web.Request) -> web.Response:
    broker = operator(request)
    priority = request.query.get("priority", "urgent")
    field_errors = []
    if priority not in sla.PRIORITIES:
        field_errors.append({"loc": ["query", "priority"], "msg": "must be urgent, medium or low", "type": "enum"})
    try:
        reported_at = _reported_at(request.query.get("reported_at"), broker.clock())
    except ValueError:
        reported_at = broker.clock()
        field_errors.append({"loc": ["query", "reported_at"], "msg": "must be RFC 3339 with an offset, years 2000 "
                             "to 2100", "type": "datetime"})
    if field_errors:
        raise Problem(problems.VALIDATION_FAILED, errors=field_errors)
    times = sla.compute(reported_at, priority)  # type: ignore[arg-type]
    return json_response({
        "reported_at": iso(times.reported_at),
        "taken_at": iso(times.taken_at),
        "ack_deadline": iso(times.ack_deadline),
        "restore_deadline": iso(times.restore_deadline),
        "priority": priority,
        "hotline_open": sla.is_hotline_open(reported_at),
    })


_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@routes.get("/v1/outages/{id}/events")
@doc(
    "The outage's audit trail: every decision (declared, acknowledged, admitted, downgraded, preempted, refused, "
    "left, lease expired, restored ...), oldest first, after the event id `after`. With `?stream=1`: the same "
    "events live, as server-sent events (operator token or `?ticket=` stream ticket; Last-Event-ID resumes)",
    auth="operator or stream ticket",
    responses={200: (list[models.AuditEvent], EVENT_STREAM)},
    errors=[problems.OUTAGE_NOT_FOUND, problems.TOO_MANY_STREAMS],
    params=[query("after", str), query("limit", int)],
)
async def outage_events(request: web.Request) -> web.StreamResponse:
    outage_id = request.match_info["id"]
    if request.query.get("stream") in ("1", "true"):
        return await serve_feed(request, outage_id)
    broker = operator(request)
    after = request.query.get("after", "")
    field_errors = []
    if after and not _EVENT_ID.match(after):
        field_errors.append({"loc": ["query", "after"], "msg": "must be an event id (<ms>-<n>)", "type": "pattern"})
    try:
        limit = int(request.query.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        field_errors.append({"loc": ["query", "limit"], "msg": "must be an integer from 1 to 1000", "type": "int"})
    if field_errors:
        raise Problem(problems.VALIDATION_FAILED, errors=field_errors)
    await broker.outages.require(outage_id)
    return json_response(await broker.outages.events(outage_id, after, limit))
