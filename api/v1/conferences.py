"""Conferences: created and changed by the hotline; read by the hotline or the conference's join token."""

from __future__ import annotations

from aiohttp import web

from .. import models, problems
from ..openapi import doc
from .common import broker, json_response, operator, principal, read_model, with_join_link

routes = web.RouteTableDef()


@routes.post("/v1/outages/{id}/conferences")
@doc(
    "Create a substitute conference (priority 1 = most important)",
    auth="operator",
    body=models.ConferenceCreate,
    responses={201: models.Conference},
    errors=[problems.OUTAGE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE, problems.RESERVE_EXCEEDS_CAPACITY],
)
async def create_conference(request: web.Request) -> web.Response:
    desk = operator(request).conferences
    body = await read_model(request, models.ConferenceCreate)
    created = await desk.create(
        request.match_info["id"], body.title, body.priority, body.reserve.model_dump(), body.max.model_dump()
    )
    doc_ = await desk.get(created["id"])
    return json_response(with_join_link(request, doc_), status=201,
                         headers={"Location": f"/v1/conferences/{created['id']}"})


@routes.get("/v1/outages/{id}/conferences")
@doc(
    "List an outage's conferences, most important first",
    auth="operator",
    responses={200: list[models.Conference]},
    errors=[problems.OUTAGE_NOT_FOUND],
)
async def list_conferences(request: web.Request) -> web.Response:
    docs = await operator(request).conferences.of_outage(request.match_info["id"])
    return json_response([with_join_link(request, d) for d in docs])


@routes.get("/v1/conferences/{id}")
@doc(
    "Read a conference and its participants (with a join token: names and kinds, no ids)",
    auth="operator or join token",
    responses={200: models.Conference},
    errors=[problems.CONFERENCE_NOT_FOUND, problems.OUTAGE_ENDED],
)
async def get_conference(request: web.Request) -> web.Response:
    who = principal(request)
    conference_id = request.match_info["id"]
    who.require_conference(conference_id)
    doc_ = await broker(request).conferences.get(conference_id, with_ids=who.operator, require_active=not who.operator)
    return json_response(with_join_link(request, doc_) if who.operator else doc_)


@routes.patch("/v1/conferences/{id}")
@doc(
    "Change a conference's title, priority, reserve or max, atomically with the ledger (never evicts anyone)",
    auth="operator",
    body=models.ConferencePatch,
    responses={200: models.Conference},
    errors=[problems.CONFERENCE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE, problems.RESERVE_EXCEEDS_CAPACITY],
)
async def patch_conference(request: web.Request) -> web.Response:
    desk = operator(request).conferences
    body = await read_model(request, models.ConferencePatch)
    given = body.model_fields_set
    doc_ = await desk.update(
        request.match_info["id"],
        title=body.title,
        priority=body.priority,
        reserve=body.reserve.model_dump(exclude_none=True) if body.reserve else None,
        ceiling=body.max.model_dump(include=body.max.model_fields_set) if "max" in given and body.max else None,
    )
    return json_response(with_join_link(request, doc_))


@routes.delete("/v1/conferences/{id}")
@doc("Close a conference: its participants leave, its ports are released", auth="operator",
     responses={204: None}, errors=[problems.CONFERENCE_NOT_FOUND])
async def delete_conference(request: web.Request) -> web.Response:
    await operator(request).conferences.delete(request.match_info["id"])
    return web.Response(status=204)
