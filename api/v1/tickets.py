"""Tickets (operator): every request to the hotline, with its outcome (clause 3-3)."""

from __future__ import annotations

from aiohttp import web

from broker import errors

from .. import models, problems
from ..openapi import doc, query
from ..problems import Problem
from .common import json_response, operator

routes = web.RouteTableDef()


@routes.get("/v1/tickets/{number}")
@doc("Read a ticket: the request and its outcome", auth="operator", responses={200: models.TicketRecord},
     errors=[problems.TICKET_NOT_FOUND])
async def get_ticket(request: web.Request) -> web.Response:
    broker = operator(request)
    ticket = await broker.tickets.get(request.match_info["number"])
    if ticket is None:
        raise errors.TicketNotFound(f"No ticket numbered {request.match_info['number']!r}")
    return json_response(ticket)


@routes.get("/v1/tickets")
@doc("List tickets, newest first (of one contract when given)", auth="operator",
     responses={200: list[models.TicketRecord]}, params=[query("contract", str), query("limit", int)])
async def list_tickets(request: web.Request) -> web.Response:
    broker = operator(request)
    try:
        limit = int(request.query.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        raise Problem(problems.VALIDATION_FAILED, errors=[
            {"loc": ["query", "limit"], "msg": "must be an integer from 1 to 1000", "type": "int"}]) from None
    return json_response(await broker.tickets.recent(request.query.get("contract") or None, limit))
