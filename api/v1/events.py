"""The live audit feed (operator): every outage's decisions as server-sent events, and the stream
tickets an EventSource authenticates with (see ``api.livefeed``)."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from broker.outages import iso

from .. import models, problems
from ..appkeys import KEYS, SETTINGS
from ..auth import bearer_token, sign_stream_ticket
from ..livefeed import serve_feed
from ..openapi import EVENT_STREAM, doc, header, query
from .common import json_response, operator

routes = web.RouteTableDef()


@routes.post("/v1/events/tickets")
@doc(
    "A stream ticket: opens the live feed with `?ticket=` for a short while (an EventSource cannot send an "
    "Authorization header; the operator token never goes into a URL)",
    auth="operator",
    responses={201: models.StreamTicket},
)
async def create_stream_ticket(request: web.Request) -> web.Response:
    broker = operator(request)
    settings = request.app[SETTINGS]
    expires = broker.clock() + timedelta(seconds=settings.sse_ticket_ttl_s)
    ticket = sign_stream_ticket(request.app[KEYS].signing_key("stream"), bearer_token(request), int(expires.timestamp() * 1000))
    return json_response({"ticket": ticket, "expires_at": iso(expires),
                          "events_url": f"{settings.base_url}/v1/events"}, status=201)


@routes.get("/v1/events")
@doc(
    "Every outage's decisions, live (server-sent events `audit`; each id resumes right after it with "
    "Last-Event-ID, or `last_event_id` in the query; `backlog`: first the last n events of each outage)",
    auth="operator or stream ticket",
    responses={200: EVENT_STREAM},
    errors=[problems.TOO_MANY_STREAMS],
    params=[query("ticket", str), query("last_event_id", str), query("backlog", int), header("Last-Event-ID", str)],
)
async def event_stream(request: web.Request) -> web.StreamResponse:
    return await serve_feed(request, None)
