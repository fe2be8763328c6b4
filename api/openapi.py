"""The OpenAPI 3.1 document, generated from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from broker.contracts import Contract

from . import models, problems

_REF = "#/components/schemas/{model}"

# (method, path, summary, request model, success status, response model, list?, auth, error codes)
_OPS: list[tuple[str, str, str, type[BaseModel] | None, int, type[BaseModel] | None, bool, str, list[str]]] = [
    ("put", "/v1/contracts/{number}", "Create or replace a contract", Contract, 200, Contract, False, "operator", ["validation_failed"]),
    ("get", "/v1/contracts/{number}", "Read a contract", None, 200, Contract, False, "operator", ["contract_not_found"]),
    ("get", "/v1/contracts", "List contracts", None, 200, Contract, True, "operator", []),
    ("get", "/v1/sla", "The SLA clock for a call taken at reported_at", None, 200, models.SlaAnswer, False, "operator", ["validation_failed"]),
    ("post", "/v1/outages", "Declare a client's server down", models.OutageDeclare, 201, models.Outage, False, "operator",
     ["contract_not_found", "not_eligible", "outage_already_active", "idempotency_key_reused", "validation_failed"]),
    ("get", "/v1/outages", "List outages", None, 200, models.Outage, True, "operator", []),
    ("get", "/v1/outages/{id}", "Read an outage", None, 200, models.Outage, False, "operator", ["outage_not_found"]),
    ("post", "/v1/outages/{id}/restore", "The client's server is back", None, 200, models.Outage, False, "operator",
     ["outage_not_found", "outage_not_active"]),
    ("post", "/v1/outages/{id}/extend", "Move the outage window's end", models.OutageExtend, 200, models.Outage, False, "operator",
     ["outage_not_found", "outage_not_active", "invalid_window"]),
    ("post", "/v1/outages/{id}/conferences", "Create a substitute conference", models.ConferenceCreate, 201, models.Conference, False,
     "operator", ["outage_not_found", "outage_not_active", "reserve_exceeds_capacity"]),
    ("get", "/v1/outages/{id}/conferences", "List an outage's conferences", None, 200, models.Conference, True, "operator", ["outage_not_found"]),
    ("get", "/v1/conferences/{id}", "Read a conference and its participants", None, 200, models.Conference, False, "operator or join token",
     ["conference_not_found", "outage_ended"]),
    ("delete", "/v1/conferences/{id}", "Close a conference", None, 204, None, False, "operator", ["conference_not_found"]),
    ("post", "/v1/conferences/{id}/participants", "Admit a participant (takes one port)", models.ParticipantCreate, 201,
     models.Participant, False, "operator or join token", ["capacity_exhausted", "outage_ended", "conference_not_found"]),
    ("get", "/v1/participants/{id}", "Read a participant", None, 200, models.Participant, False, "operator or join token", ["participant_not_found"]),
    ("delete", "/v1/participants/{id}", "Leave: the port is free at once", None, 204, None, False, "operator or join token", ["participant_not_found"]),
    ("post", "/v1/participants/{id}/offer", "WebRTC offer -> answer (non-trickle ICE)", models.SessionDescription, 200,
     models.SessionAnswer, False, "operator or join token", ["participant_gone", "no_media_node", "media_node_error"]),
]


@lru_cache(maxsize=4)
def openapi_document(base_url: str) -> dict[str, Any]:
    used = {m for op in _OPS for m in (op[3], op[5]) if m is not None} | {models.ProblemDetails}
    _, schemas = models_json_schema(
        [(m, "validation" if m in {op[3] for op in _OPS} else "serialization") for m in sorted(used, key=lambda m: m.__name__)],
        ref_template=_REF,
    )
    components = schemas.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    by_code = {p.code: p for p in problems.ALL}
    for method, path, summary, req, status, resp, many, auth, codes in _OPS:
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "description": f"Auth: {auth} bearer token.",
            "security": [{"bearer": []}],
            "responses": {},
        }
        params = [
            {"name": name.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path.split("/")
            if name.startswith("{")
        ]
        if path == "/v1/sla":
            params += [
                {"name": "reported_at", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "priority", "in": "query", "schema": {"enum": ["urgent", "medium", "low"]}},
            ]
        if path == "/v1/outages" and method == "get":
            params.append({"name": "state", "in": "query", "schema": {"enum": ["active", "restored", "expired"]}})
        if method == "post" and path == "/v1/outages":
            params.append({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}})
        if params:
            op["parameters"] = params
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=req.__name__)}}},
            }
        if resp is None:
            op["responses"][str(status)] = {"description": "Done"}
        else:
            schema: dict[str, Any] = {"$ref": _REF.format(model=resp.__name__)}
            if many:
                schema = {"type": "array", "items": schema}
            op["responses"][str(status)] = {"description": "OK", "content": {"application/json": {"schema": schema}}}
            if method == "put":  # an upsert: 201 when it created the resource
                op["responses"]["201"] = {"description": "Created", "content": {"application/json": {"schema": schema}}}
        common = {"unauthorized", "forbidden", "store_unavailable", "not_found"}
        if req is not None:
            common |= {"malformed_json", "validation_failed", "body_too_large"}
        if any(p["in"] == "query" for p in params):
            common.add("validation_failed")
        for code in sorted({*codes, *common}):
            p = by_code[code]
            entry = op["responses"].setdefault(
                str(p.status),
                {"description": "", "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="ProblemDetails")}}}},
            )
            entry["description"] = (entry["description"] + f" `{code}`: {p.title}.").strip()
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Backup+ broker",
            "version": "1.0.0",
            "description": "Substitute conferencing capacity (8 web/audio + 10 video ports at 480p per outage) "
            "while a client's own conference server is down. Errors are RFC 9457 problem+json with a stable `code`.",
        },
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
