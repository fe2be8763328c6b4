"""Pydantic models at the API edge: request bodies (validated) and responses (documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

Priority = Literal["urgent", "medium", "low"]
Kind = Literal["audio", "video"]
OutageState = Literal["active", "restored", "expired"]


def _plausible(value: datetime) -> datetime:
    # Far dates carry historical local-mean-time offsets (+00:09:21 in Paris) that RFC 3339 cannot write.
    if not 2000 <= value.year <= 2100:
        raise ValueError("must be between the years 2000 and 2100")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TicketIn(_In):
    priority: Priority = "urgent"
    site: str = Field("", max_length=200)
    contact: str = Field("", max_length=200)
    description: str = Field("", max_length=4000)


class OutageDeclare(_In):
    contract: str = Field(min_length=1, max_length=64)
    serial: str = Field(min_length=1, max_length=64)
    ticket: TicketIn
    reported_at: Instant | None = Field(None, description="When the hotline got the call (default now)")


class OutageExtend(_In):
    window_ends_at: Instant


class Reserve(_In):
    audio: int = Field(0, ge=0, le=1000)
    video: int = Field(0, ge=0, le=1000)


class ConferenceCreate(_In):
    title: str = Field(min_length=1, max_length=200)
    priority: int = Field(1, ge=1, le=100, description="1 = most important")
    reserve: Reserve = Field(default_factory=Reserve)


class ParticipantCreate(_In):
    display_name: str = Field(min_length=1, max_length=80)
    kind: Kind
    downgrade: bool = True


class SessionDescription(_In):
    type: Literal["offer"]
    sdp: str = Field(min_length=10, max_length=60_000)


# --- responses -----------------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Ticket(_Out):
    number: str
    priority: Priority
    site: str = ""
    contact: str = ""
    description: str = ""


class Capacity(_Out):
    audio: int
    video: int
    max_video_height: int


class Usage(_Out):
    audio: int
    video: int


class Outage(_Out):
    id: str
    contract: str
    serial: str
    state: OutageState
    ticket: Ticket
    reported_at: datetime
    taken_at: datetime
    ack_deadline: datetime
    restore_deadline: datetime
    window_ends_at: datetime
    capacity: Capacity
    in_use: Usage
    conferences: list[str]
    declared_at: datetime
    ended_at: datetime | None = None


class SlaAnswer(_Out):
    reported_at: datetime
    taken_at: datetime
    ack_deadline: datetime
    restore_deadline: datetime
    priority: Priority


class ParticipantSummary(_Out):
    id: str
    display_name: str
    kind: Kind
    requested_kind: Kind
    state: str


class Conference(_Out):
    id: str
    outage: str
    title: str
    priority: int
    reserve: Usage
    join_token: str | None = None
    join_url: str | None = None
    outage_state: OutageState | None = None
    window_ends_at: datetime | None = None
    participants: list[ParticipantSummary] | None = None


class Participant(_Out):
    id: str
    conference: str
    outage: str
    display_name: str
    kind: Kind
    requested_kind: Kind
    downgraded: bool
    state: str
    lease_expires_at: datetime


class SessionAnswer(_Out):
    type: Literal["answer"]
    sdp: str


class Health(_Out):
    status: Literal["alive"]


class MediaNodeCounts(_Out):
    ready: int
    draining: int
    dead: int


class Readiness(_Out):
    status: Literal["ready"]
    redis: Literal["ok"]
    media_nodes: MediaNodeCounts


class ProblemDetails(_Out):
    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = Field(None, description="The request's X-Request-Id: quote it to the operators")


def field_errors(exc: Any) -> list[dict[str, Any]]:
    """A pydantic ValidationError as a stable, JSON-safe list of {loc, msg, type}."""
    return [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
