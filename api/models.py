"""Pydantic models at the API edge: request bodies (validated) and responses (documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

Priority = Literal["urgent", "medium", "low"]
Kind = Literal["audio", "video"]
OutageState = Literal["active", "restored"]
ParticipantState = Literal["admitted", "connected", "left", "preempted", "ended"]
# Required text of the hotline's intake (clause 3-3): not blank once stripped.
Required200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Required4000 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Optional200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None


def _plausible(value: datetime) -> datetime:
    # Far dates carry historical local-mean-time offsets (+00:09:21 in Paris) that RFC 3339 cannot write.
    if not 2000 <= value.year <= 2100:
        raise ValueError("must be between the years 2000 and 2100")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TicketIn(_In):
    """What clause 3-3 asks of every request: company, serial and model, contract, site and on-site
    contact, a detailed description. Company and model default to the contract's and the equipment's."""

    priority: Priority = Field("urgent", description="A total outage is urgent (clause 3-3)")
    company: Optional200 = None
    model: Optional200 = None
    site: Required200
    contact: Required200
    description: Required4000


class OutageDeclare(_In):
    contract: str = Field(min_length=1, max_length=64)
    serial: str = Field(min_length=1, max_length=64)
    ticket: TicketIn
    reported_at: Instant | None = Field(
        None, description="When the hotline got the call (default now; at most 5 minutes ahead, 7 days back)"
    )


class OutageExtend(_In):
    window_ends_at: Instant | None = Field(description="A planned end of Backup+, or null to clear it")


class Acknowledge(_In):
    by: Required200 = Field(description="Who at the hotline takes charge")


class Restore(_In):
    by: Optional200 = None


class Reserve(_In):
    audio: StrictInt = Field(0, ge=0, le=1000)
    video: StrictInt = Field(0, ge=0, le=1000)


class ReservePatch(_In):
    audio: StrictInt | None = Field(None, ge=0, le=1000)
    video: StrictInt | None = Field(None, ge=0, le=1000)


class Ceiling(_In):
    """The most ports of each kind a conference may hold; null (or absent) for no ceiling."""

    audio: StrictInt | None = Field(None, ge=0, le=1000)
    video: StrictInt | None = Field(None, ge=0, le=1000)


class ConferenceCreate(_In):
    title: Required200
    priority: StrictInt = Field(5, ge=1, le=100, description="1 = most important (clause 3-5)")
    reserve: Reserve = Field(default_factory=Reserve)
    max: Ceiling = Field(default_factory=Ceiling)


class ConferencePatch(_In):
    """Only what is given changes; in ``max``, a kind given as null removes its ceiling."""

    title: Required200 | None = None
    priority: StrictInt | None = Field(None, ge=1, le=100)
    reserve: ReservePatch | None = None
    max: Ceiling | None = None


class ParticipantCreate(_In):
    display_name: str = Field(min_length=1, max_length=80)
    kind: Kind
    downgrade: bool = True


class SessionDescription(_In):
    type: Literal["offer"]
    # its content and size are checked by infra.sdpcheck (422 invalid_sdp), not here
    sdp: str = Field(description="The offer's SDP (at most 32 KiB, see infra/sdpcheck.py)")


# --- responses -----------------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Ticket(_Out):
    number: str
    priority: Priority
    company: str | None = None
    model: str | None = None
    site: str = ""
    contact: str = ""
    description: str = ""
    mismatch: dict[str, Any] | None = Field(None, description="Given values that differ from the contract's")


class AuditEvent(_Out):
    """One decision on an outage, as the script that made it recorded it (more fields by type)."""

    id: str = Field(description="Stream id: pass it as `after` to read on")
    type: str
    at: str = Field(description="Redis time of the decision, ms since the epoch")
    at_iso: datetime


class StreamTicket(_Out):
    """Opens the live feed (``?ticket=``) for a short while; good for nothing else."""

    ticket: str
    expires_at: datetime
    events_url: str = Field(description="GET it with an EventSource: every outage's decisions, live")


class TicketRecord(_Out):
    """A request to the hotline and its outcome (clause 3-3: every request gets a number)."""

    number: str
    received_at: datetime
    contract: str | None = None
    serial: str | None = None
    outcome: Literal["outage", "refused", "pending"]
    outage_id: str | None = None
    code: str | None = None
    reason: str | None = None


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
    acknowledged_at: datetime | None = None
    ack_met: bool | None = None
    restore_deadline: datetime
    restore_overdue: bool
    window_ends_at: datetime | None = None
    capacity: Capacity
    in_use: Usage
    conferences: list[str]
    declared_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None


class SlaAnswer(_Out):
    reported_at: datetime
    taken_at: datetime
    ack_deadline: datetime
    restore_deadline: datetime
    priority: Priority


class ParticipantSummary(_Out):
    id: str | None = Field(None, description="Absent for a join token")
    display_name: str
    kind: Kind
    requested_kind: Kind
    state: ParticipantState


class CeilingOut(_Out):
    audio: int | None
    video: int | None


class Conference(_Out):
    id: str
    outage: str
    title: str
    priority: int
    reserve: Usage
    max: CeilingOut
    in_use: Usage | None = None
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
    state: ParticipantState
    lease_expires_at: datetime | None = None


class IceServer(_Out):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Admitted(Participant):
    participant_token: str = Field(description="Acts for this participant alone (offer, read, leave)")
    ice_servers: list[IceServer]
    preempted: bool = Field(False, description="This admission took the port of a less important conference")


class SessionAnswer(_Out):
    type: Literal["answer"]
    sdp: str


class Health(_Out):
    status: Literal["alive"]


class MediaNodeCounts(_Out):
    ready: int
    draining: int
    dead: int


class TurnStatus(_Out):
    mode: Literal["private", "external", "none"] = Field(
        description="private: serve's own turnserver; external: --turn-url servers; none: direct UDP only")
    urls: list[str]
    detail: str


class Readiness(_Out):
    status: Literal["ready"]
    redis: Literal["ok"]
    media_nodes: MediaNodeCounts
    turn: TurnStatus | None = Field(None, description="Where participants behind firewalls are relayed")


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
