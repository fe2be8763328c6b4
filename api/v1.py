"""The /v1 API surface (see the shared API.md). Handlers validate, authorise and delegate to the broker."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from broker import sla
from broker.contracts import Contract
from broker.errors import CapacityExhausted, ConferenceNotFound, NoMediaNode, OutageEnded
from broker.service import Broker, iso

from . import models, problems
from .appkeys import BROKER, MEDIA_GATEWAY, SECRET, SETTINGS, TELEMETRY
from .auth import Principal, authenticate, sign_join_token
from .openapi import doc, header, query
from .problems import Problem

M = TypeVar("M", bound=BaseModel)
routes = web.RouteTableDef()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=str), status=status, content_type="application/json", headers=headers
    )


async def read_model(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(problems.MALFORMED_JSON, f"The body is not valid JSON: {exc}") from None
    if data is None:
        raise Problem(problems.MALFORMED_JSON, "A JSON body is required")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(problems.VALIDATION_FAILED, errors=models.field_errors(exc)) from None


def principal(request: web.Request) -> Principal:
    return authenticate(request, request.app[SETTINGS].operator_tokens, request.app[SECRET])


def operator(request: web.Request) -> Broker:
    principal(request).require_operator()
    return request.app[BROKER]


def _conference_out(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    token = sign_join_token(request.app[SECRET], doc["id"])
    return {**doc, "join_token": token, "join_url": f"{request.app[SETTINGS].base_url}/join/{token}"}


# --- contracts -------------------------------------------------------------------------------------
@routes.put("/v1/contracts/{number}")
@doc(
    "Create or replace a contract",
    auth="operator",
    body=Contract,
    responses={200: Contract, 201: Contract},
    errors=[problems.VALIDATION_FAILED],
)
async def put_contract(request: web.Request) -> web.Response:
    broker = operator(request)
    contract = await read_model(request, Contract)
    if contract.number != request.match_info["number"]:
        raise Problem(
            problems.VALIDATION_FAILED,
            "The number in the body differs from the one in the path",
            errors=[{"loc": ["number"], "msg": "must equal the path's number", "type": "value_error"}],
        )
    created = await broker.contracts.put(contract)
    stored = await broker.contracts.get(contract.number)
    assert stored is not None
    return _json(stored.model_dump(mode="json"), status=201 if created else 200)


@routes.get("/v1/contracts/{number}")
@doc("Read a contract", auth="operator", responses={200: Contract}, errors=[problems.CONTRACT_NOT_FOUND])
async def get_contract(request: web.Request) -> web.Response:
    broker = operator(request)
    contract = await broker.contracts.get(request.match_info["number"])
    if contract is None:
        raise Problem(problems.CONTRACT_NOT_FOUND, f"No contract numbered {request.match_info['number']!r}")
    return _json(contract.model_dump(mode="json"))


@routes.get("/v1/contracts")
@doc("List contracts", auth="operator", responses={200: list[Contract]})
async def list_contracts(request: web.Request) -> web.Response:
    broker = operator(request)
    return _json([c.model_dump(mode="json") for c in await broker.contracts.list()])


# --- SLA -------------------------------------------------------------------------------------------
@routes.get("/v1/sla")
@doc(
    "The SLA clock for a call taken at reported_at",
    auth="operator",
    responses={200: models.SlaAnswer},
    params=[query("reported_at", datetime), query("priority", models.Priority)],
)
async def get_sla(request: web.Request) -> web.Response:
    operator(request)
    priority = request.query.get("priority", "urgent")
    errors = []
    if priority not in sla.PRIORITIES:
        errors.append({"loc": ["query", "priority"], "msg": "must be urgent, medium or low", "type": "enum"})
    raw = request.query.get("reported_at")
    reported_at = request.app[BROKER].clock()
    if raw is not None:
        try:
            reported_at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
            if reported_at.tzinfo is None:
                raise ValueError("no offset")
            if not 2000 <= reported_at.year <= 2100:
                raise ValueError("out of range")
        except ValueError:
            errors.append(
                {"loc": ["query", "reported_at"], "msg": "must be RFC 3339 with an offset, years 2000 to 2100",
                 "type": "datetime"}
            )
    if errors:
        raise Problem(problems.VALIDATION_FAILED, errors=errors)
    times = sla.compute(reported_at, priority)  # type: ignore[arg-type]
    return _json(
        {
            "reported_at": iso(times.reported_at),
            "taken_at": iso(times.taken_at),
            "ack_deadline": iso(times.ack_deadline),
            "restore_deadline": iso(times.restore_deadline),
            "priority": priority,
            "hotline_open": sla.is_hotline_open(reported_at),
        }
    )


# --- outages ---------------------------------------------------------------------------------------
@routes.post("/v1/outages")
@doc(
    "Declare a client's server down",
    auth="operator",
    body=models.OutageDeclare,
    responses={201: models.Outage},
    errors=[
        problems.CONTRACT_NOT_FOUND,
        problems.NOT_ELIGIBLE,
        problems.OUTAGE_ALREADY_ACTIVE,
        problems.IDEMPOTENCY_KEY_REUSED,
    ],
    params=[header("Idempotency-Key", Annotated[str, Field(min_length=1, max_length=200)])],
)
async def declare_outage(request: web.Request) -> web.Response:
    broker = operator(request)
    body = await read_model(request, models.OutageDeclare)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 200):
        raise Problem(problems.VALIDATION_FAILED, "Idempotency-Key must be 1 to 200 characters")
    outage, created = await broker.declare_outage(body.model_dump(), key)
    headers = {"Location": f"/v1/outages/{outage['id']}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _json(outage, status=201, headers=headers)


@routes.get("/v1/outages")
@doc(
    "List outages", auth="operator", responses={200: list[models.Outage]}, params=[query("state", models.OutageState)]
)
async def list_outages(request: web.Request) -> web.Response:
    broker = operator(request)
    state = request.query.get("state")
    if state is not None and state not in ("active", "restored", "expired"):
        raise Problem(
            problems.VALIDATION_FAILED,
            errors=[{"loc": ["query", "state"], "msg": "must be active, restored or expired", "type": "enum"}],
        )
    return _json(await broker.list_outages(state))


@routes.get("/v1/outages/{id}")
@doc("Read an outage", auth="operator", responses={200: models.Outage}, errors=[problems.OUTAGE_NOT_FOUND])
async def get_outage(request: web.Request) -> web.Response:
    return _json(await operator(request).get_outage(request.match_info["id"]))


@routes.post("/v1/outages/{id}/restore")
@doc(
    "The client's server is back",
    auth="operator",
    responses={200: models.Outage},
    errors=[problems.OUTAGE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE],
)
async def restore_outage(request: web.Request) -> web.Response:
    return _json(await operator(request).end_outage(request.match_info["id"], "restored"))


@routes.post("/v1/outages/{id}/extend")
@doc(
    "Move the outage window's end",
    auth="operator",
    body=models.OutageExtend,
    responses={200: models.Outage},
    errors=[problems.OUTAGE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE, problems.INVALID_WINDOW],
)
async def extend_outage(request: web.Request) -> web.Response:
    broker = operator(request)
    body = await read_model(request, models.OutageExtend)
    return _json(await broker.extend_outage(request.match_info["id"], body.window_ends_at))


# --- conferences -----------------------------------------------------------------------------------
@routes.post("/v1/outages/{id}/conferences")
@doc(
    "Create a substitute conference",
    auth="operator",
    body=models.ConferenceCreate,
    responses={201: models.Conference},
    errors=[problems.OUTAGE_NOT_FOUND, problems.OUTAGE_NOT_ACTIVE, problems.RESERVE_EXCEEDS_CAPACITY],
)
async def create_conference(request: web.Request) -> web.Response:
    broker = operator(request)
    body = await read_model(request, models.ConferenceCreate)
    doc = await broker.create_conference(request.match_info["id"], body.model_dump())
    return _json(_conference_out(request, doc), status=201, headers={"Location": f"/v1/conferences/{doc['id']}"})


@routes.get("/v1/outages/{id}/conferences")
@doc(
    "List an outage's conferences",
    auth="operator",
    responses={200: list[models.Conference]},
    errors=[problems.OUTAGE_NOT_FOUND],
)
async def list_conferences(request: web.Request) -> web.Response:
    broker = operator(request)
    docs = await broker.list_conferences(request.match_info["id"])
    return _json([_conference_out(request, d) for d in docs])


@routes.get("/v1/conferences/{id}")
@doc(
    "Read a conference and its participants",
    auth="operator or join token",
    responses={200: models.Conference},
    errors=[problems.CONFERENCE_NOT_FOUND, problems.OUTAGE_ENDED],
)
async def get_conference(request: web.Request) -> web.Response:
    who = principal(request)
    conference_id = request.match_info["id"]
    who.require_conference(conference_id)
    doc = await request.app[BROKER].get_conference(conference_id, require_active=not who.operator)
    return _json(_conference_out(request, doc) if who.operator else doc)


@routes.delete("/v1/conferences/{id}")
@doc("Close a conference", auth="operator", responses={204: None}, errors=[problems.CONFERENCE_NOT_FOUND])
async def delete_conference(request: web.Request) -> web.Response:
    await operator(request).delete_conference(request.match_info["id"])
    return web.Response(status=204)


# --- participants ----------------------------------------------------------------------------------
@routes.post("/v1/conferences/{id}/participants")
@doc(
    "Admit a participant (takes one port)",
    auth="operator or join token",
    body=models.ParticipantCreate,
    responses={201: models.Participant},
    errors=[problems.CAPACITY_EXHAUSTED, problems.OUTAGE_ENDED, problems.CONFERENCE_NOT_FOUND],
)
async def admit_participant(request: web.Request) -> web.Response:
    who = principal(request)
    conference_id = request.match_info["id"]
    who.require_conference(conference_id)
    body = await read_model(request, models.ParticipantCreate)
    broker = request.app[BROKER]
    metrics = request.app[TELEMETRY].admissions
    started = time.perf_counter()
    try:
        try:
            admission = await broker.admit(conference_id, body.model_dump())
        except ConferenceNotFound:
            if who.operator:
                raise
            # A genuine join token names a conference that existed: the hotline has closed it.
            raise OutageEnded("This conference has been closed by the hotline", reason="conference_closed") from None
    except CapacityExhausted:
        metrics.observe(body.kind, "refused_capacity", time.perf_counter() - started)
        raise
    except OutageEnded:
        metrics.observe(body.kind, "refused_ended", time.perf_counter() - started)
        raise
    except Exception:
        metrics.observe(body.kind, "error", time.perf_counter() - started)
        raise
    metrics.observe(body.kind, "downgraded" if admission.downgraded else "granted", time.perf_counter() - started)
    p = admission.participant
    return _json(p, status=201, headers={"Location": f"/v1/participants/{p['id']}"})


async def _participant_for(request: web.Request) -> dict[str, Any]:
    who = principal(request)
    participant = await request.app[BROKER].get_participant(request.match_info["id"])
    who.require_conference(participant["conference"])
    return participant


@routes.get("/v1/participants/{id}")
@doc(
    "Read a participant",
    auth="operator or join token",
    responses={200: models.Participant},
    errors=[problems.PARTICIPANT_NOT_FOUND],
)
async def get_participant(request: web.Request) -> web.Response:
    return _json(await _participant_for(request))


@routes.delete("/v1/participants/{id}")
@doc(
    "Leave: the port is free at once",
    auth="operator or join token",
    responses={204: None},
    errors=[problems.PARTICIPANT_NOT_FOUND],
)
async def delete_participant(request: web.Request) -> web.Response:
    who = principal(request)
    await request.app[BROKER].leave(request.match_info["id"], None if who.operator else who.conference_id)
    return web.Response(status=204)


@routes.post("/v1/participants/{id}/offer")
@doc(
    "WebRTC offer -> answer (non-trickle ICE)",
    auth="operator or join token",
    body=models.SessionDescription,
    responses={200: models.SessionAnswer},
    errors=[problems.PARTICIPANT_GONE, problems.NO_MEDIA_NODE, problems.MEDIA_NODE_ERROR],
)
async def participant_offer(request: web.Request) -> web.Response:
    participant = await _participant_for(request)
    body = await read_model(request, models.SessionDescription)
    if not participant["live"]:
        raise Problem(problems.PARTICIPANT_GONE, headers={})
    gateway = request.app.get(MEDIA_GATEWAY)
    if gateway is None:
        raise NoMediaNode("This broker runs without a media plane", retry_after=5)
    return _json(await gateway.offer(participant, body.sdp, body.type))

