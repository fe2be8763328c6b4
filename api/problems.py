"""Every error the API returns: one stable ``code`` each, in one place (RFC 9457 problem details)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    code: str
    status: int
    title: str


def _p(code: str, status: int, title: str) -> ProblemType:
    return ProblemType(code, status, title)


MALFORMED_JSON = _p("malformed_json", 400, "The request body is not valid JSON")
VALIDATION_FAILED = _p("validation_failed", 422, "The request has invalid fields")
BODY_TOO_LARGE = _p("body_too_large", 413, "The request body is too large")
UNSUPPORTED_MEDIA_TYPE = _p("unsupported_media_type", 415, "The request body must be JSON")
UNAUTHORIZED = _p("unauthorized", 401, "Missing or invalid bearer token")
FORBIDDEN = _p("forbidden", 403, "This token may not do that")
NOT_FOUND = _p("not_found", 404, "No such resource")
METHOD_NOT_ALLOWED = _p("method_not_allowed", 405, "Method not allowed")
CONTRACT_NOT_FOUND = _p("contract_not_found", 404, "No such contract")
NOT_ELIGIBLE = _p("not_eligible", 422, "The contract does not entitle this equipment to Backup+")
OUTAGE_NOT_FOUND = _p("outage_not_found", 404, "No such outage")
OUTAGE_ALREADY_ACTIVE = _p("outage_already_active", 409, "This contract already has an active outage")
OUTAGE_NOT_ACTIVE = _p("outage_not_active", 409, "The outage is not active")
OUTAGE_ENDED = _p("outage_ended", 410, "The outage has ended: the client's own server is back")
INVALID_WINDOW = _p("invalid_window", 422, "The planned end must be in the future")
INVALID_REPORTED_AT = _p("invalid_reported_at", 422, "The call is dated more than 5 minutes ahead or 7 days back")
TICKET_NOT_FOUND = _p("ticket_not_found", 404, "No such ticket")
IDEMPOTENCY_KEY_REUSED = _p("idempotency_key_reused", 422, "This Idempotency-Key was used for a different request")
CONFERENCE_NOT_FOUND = _p("conference_not_found", 404, "No such conference")
RESERVE_EXCEEDS_CAPACITY = _p("reserve_exceeds_capacity", 409, "The reserves would exceed the outage's capacity")
CAPACITY_EXHAUSTED = _p("capacity_exhausted", 409, "No port of this kind is free")
RATE_LIMITED = _p("rate_limited", 429, "This conference's link admits faster than a meeting of people would")
PARTICIPANT_NOT_FOUND = _p("participant_not_found", 404, "No such participant")
PARTICIPANT_GONE = _p("participant_gone", 410, "This participant's port has been released: join again")
KEY_RING_MISMATCH = _p("key_ring_mismatch", 503, "This process cannot accept the deployment's key ring")
NO_MEDIA_NODE = _p("no_media_node", 503, "No media node can take this conference now")
MEDIA_NODE_ERROR = _p("media_node_error", 502, "The media node failed to answer")
TOO_MANY_STREAMS = _p("too_many_streams", 503, "This broker process has as many live streams open as it may")
STORE_UNAVAILABLE = _p("store_unavailable", 503, "The broker's store (Redis) is unreachable")
INTERNAL_ERROR = _p("internal_error", 500, "Internal error")

ALL: tuple[ProblemType, ...] = tuple(v for v in list(globals().values()) if isinstance(v, ProblemType))


class Problem(Exception):
    """Raised anywhere below a handler; the error middleware renders it as problem+json."""

    def __init__(
        self,
        problem: ProblemType,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or problem.title)
        self.problem = problem
        self.detail = detail or problem.title
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"https://backupplus.example/problems/{self.problem.code}",
            "title": self.problem.title,
            "status": self.problem.status,
            "detail": self.detail,
            "code": self.problem.code,
        }
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc

    def response(self, instance: str | None = None) -> web.Response:
        return web.Response(
            status=self.problem.status,
            text=json.dumps(self.body(instance)),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )
