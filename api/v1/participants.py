"""Participants: admitted with a conference's join token; then each acts alone with its own
participant token (offer, read, leave). A join token no longer acts on participants (403)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aiohttp import web

from broker import errors
from broker.participants import Admission
from broker.turn import ice_servers
from infra.sdpcheck import InvalidSdp, check_offer

from .. import models, problems
from ..appkeys import KEYS, MEDIA_GATEWAY, TELEMETRY, TURN
from ..auth import sign_participant_token
from ..openapi import doc, header
from ..problems import Problem
from .common import broker, idempotency_key, json_response, principal, read_model

routes = web.RouteTableDef()
_PARTICIPANT_ERRORS = [problems.PARTICIPANT_NOT_FOUND]


def _result(admission: Admission) -> str:
    if admission.preempted:
        return "preempted"
    return "downgraded" if admission.downgraded else "granted"


async def _planned_end(request: web.Request, outage_id: str | None) -> datetime | None:
    """The outage's planned end, if the hotline set one: TURN credentials never outlive it."""
    if not outage_id or not request.app[TURN].enabled:
        return None
    found = await broker(request).outages.fields(outage_id)
    planned = found[1].get("window_ends_at") if found else None
    return datetime.fromisoformat(planned) if planned else None


async def admitted(request: web.Request, admission: Admission) -> dict[str, Any]:
    """The admission answer: the participant, its own token and the ICE servers it must use (its TURN
    credentials, valid 12 h by default and never past a planned end of the outage)."""
    p = admission.participant
    desk = broker(request)
    planned_end = await _planned_end(request, p.get("outage"))
    return {
        **p,
        "participant_token": sign_participant_token(request.app[KEYS].signing_key("participant"), p["id"]),
        "ice_servers": ice_servers(request.app[TURN], p["id"], desk.clock(), planned_end),
        "preempted": admission.preempted is not None,
    }


@routes.post("/v1/conferences/{id}/participants")
@doc(
    "Admit a participant: it takes one port (the most important conferences first)",
    auth="operator or join token",
    body=models.ParticipantCreate,
    responses={201: models.Admitted},
    errors=[problems.CAPACITY_EXHAUSTED, problems.RATE_LIMITED, problems.OUTAGE_ENDED, problems.CONFERENCE_NOT_FOUND,
            problems.IDEMPOTENCY_KEY_REUSED],
    params=[header("Idempotency-Key", str)],
)
async def admit_participant(request: web.Request) -> web.Response:
    who = principal(request)
    conference_id = request.match_info["id"]
    who.require_conference(conference_id)
    key = idempotency_key(request)
    body = await read_model(request, models.ParticipantCreate)
    telemetry = request.app[TELEMETRY]
    started = time.perf_counter()
    result = "error"
    try:
        try:
            admission = await broker(request).participants.admit(
                conference_id, body.display_name, body.kind, body.downgrade, key
            )
        except errors.ConferenceNotFound:
            if who.operator:
                raise
            # A genuine join token names a conference that existed: the hotline has closed it.
            raise errors.OutageEnded("This conference has been closed by the hotline",
                                     reason="conference_closed") from None
        result = _result(admission)
    except errors.CapacityExhausted:
        result = "refused_capacity"
        raise
    except errors.RateLimited:
        result = "rate_limited"
        raise
    except errors.OutageEnded:
        result = "refused_ended"
        raise
    finally:
        telemetry.admissions.observe(body.kind, result, time.perf_counter() - started)
    if admission.preempted:
        telemetry.preemptions.inc(admission.participant["kind"])
    answer = await admitted(request, admission)
    headers = {"Location": f"/v1/participants/{answer['id']}"}
    if admission.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(answer, status=201, headers=headers)


async def participant_for(request: web.Request) -> dict[str, Any]:
    """The participant the path names, if the caller may act on it (404 when it may not see it)."""
    who = principal(request)
    participant_id = request.match_info["id"]
    try:
        participant = await broker(request).participants.get(participant_id)
    except errors.ParticipantNotFound:
        who.require_participant(participant_id, None)
        raise
    who.require_participant(participant_id, participant["conference"])
    # Leaving ends the token; a lease that lapsed (media node dead, network lost) does not: the page
    # must be able to learn that it was not removed, and join again.
    lapsed = participant.get("state_reason") == "lease_expired"
    if who.kind == "participant" and participant["state"] == "left" and not lapsed:
        raise Problem(problems.UNAUTHORIZED, "This participant has left: its token is no longer valid",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return participant


@routes.get("/v1/participants/{id}")
@doc("Read a participant", auth="operator or participant token", responses={200: models.Participant},
     errors=_PARTICIPANT_ERRORS)
async def get_participant(request: web.Request) -> web.Response:
    return json_response(await participant_for(request))


@routes.delete("/v1/participants/{id}")
@doc("Leave: the port is free at once", auth="operator or participant token", responses={204: None},
     errors=_PARTICIPANT_ERRORS)
async def delete_participant(request: web.Request) -> web.Response:
    participant = await participant_for(request)
    await broker(request).participants.leave(participant["id"])
    return web.Response(status=204)


@routes.post("/v1/participants/{id}/offer")
@doc(
    "Send the participant's WebRTC offer; a new offer for a connected participant restarts its ICE",
    auth="operator or participant token",
    body=models.SessionDescription,
    responses={200: models.SessionAnswer},
    errors=[*_PARTICIPANT_ERRORS, problems.PARTICIPANT_GONE, problems.INVALID_SDP, problems.NO_MEDIA_NODE,
            problems.MEDIA_NODE_ERROR],
)
async def participant_offer(request: web.Request) -> web.Response:
    participant = await participant_for(request)
    body = await read_model(request, models.SessionDescription)
    if not participant["live"]:
        raise Problem(problems.PARTICIPANT_GONE, state=participant["state"], reason=participant["state_reason"])
    try:  # checked here, before the offer leaves this process (the media node checks again)
        check_offer(body.sdp)
    except InvalidSdp as exc:
        raise errors.InvalidSdp(reason=exc.reason, line=exc.line) from None
    gateway = request.app.get(MEDIA_GATEWAY)
    if gateway is None:
        raise errors.NoMediaNode("This broker runs without a media plane", retry_after=5)
    return json_response(await gateway.offer(participant, body.sdp, body.type))
