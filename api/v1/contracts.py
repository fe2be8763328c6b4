"""Contracts (operator): the maintenance contracts that entitle a client's servers to Backup+."""

from __future__ import annotations

from aiohttp import web

from broker import sla
from broker.contracts import Contract

from .. import problems
from ..openapi import doc, query
from ..problems import Problem
from .common import json_response, operator, read_model

routes = web.RouteTableDef()
# A contract number may contain '/': the route takes the rest of the path ("%2F" works as well).
NUMBER = "{number:.+}"


def contract_out(contract: Contract) -> dict[str, object]:
    return contract.model_dump(mode="json")


@routes.put(f"/v1/contracts/{NUMBER}")
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
    return json_response(contract_out(stored), status=201 if created else 200)


@routes.get(f"/v1/contracts/{NUMBER}")
@doc("Read a contract", auth="operator", responses={200: Contract}, errors=[problems.CONTRACT_NOT_FOUND])
async def get_contract(request: web.Request) -> web.Response:
    broker = operator(request)
    contract = await broker.contracts.get(request.match_info["number"])
    if contract is None:
        raise Problem(problems.CONTRACT_NOT_FOUND, f"No contract numbered {request.match_info['number']!r}")
    return json_response(contract_out(contract))


@routes.get("/v1/contracts")
@doc(
    "List contracts (renewal_due=true: those whose renewal is to be offered now, clause 7)",
    auth="operator",
    responses={200: list[Contract]},
    params=[query("renewal_due", bool)],
)
async def list_contracts(request: web.Request) -> web.Response:
    broker = operator(request)
    flag = request.query.get("renewal_due", "").lower()
    if flag not in ("", "true", "false", "1", "0"):
        raise Problem(problems.VALIDATION_FAILED, errors=[
            {"loc": ["query", "renewal_due"], "msg": "must be true or false", "type": "bool"}])
    contracts = await broker.contracts.list()
    if flag in ("true", "1"):
        today = broker.clock().astimezone(sla.PARIS).date()
        contracts = [c for c in contracts if c.renewal_due(today)]
    return json_response([contract_out(c) for c in contracts])
