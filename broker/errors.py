"""Domain errors. Each carries the stable API ``code`` it is reported under (see api/problems.py)."""

from __future__ import annotations

from typing import Any


class BrokerError(Exception):
    code = "internal_error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.extra = extra


class ContractNotFound(BrokerError):
    code = "contract_not_found"


class NotEligible(BrokerError):
    code = "not_eligible"


class OutageNotFound(BrokerError):
    code = "outage_not_found"


class OutageAlreadyActive(BrokerError):
    code = "outage_already_active"


class OutageNotActive(BrokerError):
    code = "outage_not_active"


class OutageEnded(BrokerError):
    code = "outage_ended"


class InvalidWindow(BrokerError):
    code = "invalid_window"


class InvalidReportedAt(BrokerError):
    """A call dated more than 5 minutes ahead or 7 days back (API.md)."""

    code = "invalid_reported_at"


class ValidationFailed(BrokerError):
    """Fields that are well-formed alone but wrong together (``errors``: [{loc, msg, type}])."""

    code = "validation_failed"


class TicketNotFound(BrokerError):
    code = "ticket_not_found"


class IdempotencyKeyReused(BrokerError):
    code = "idempotency_key_reused"


class ConferenceNotFound(BrokerError):
    code = "conference_not_found"


class ReserveExceedsCapacity(BrokerError):
    code = "reserve_exceeds_capacity"


class CapacityExhausted(BrokerError):
    code = "capacity_exhausted"


class RateLimited(BrokerError):
    """One conference's link admits faster than a meeting of people would (``retry_after`` seconds)."""

    code = "rate_limited"


class ParticipantNotFound(BrokerError):
    code = "participant_not_found"


class Forbidden(BrokerError):
    code = "forbidden"


class NoMediaNode(BrokerError):
    """No live, ready media node has room for this outage (the client retries)."""

    code = "no_media_node"


class InvalidSdp(BrokerError):
    """A participant's SDP offer that the API or the media node refuses (``reason``: which check,
    ``infra.sdpcheck``); nothing changes."""

    code = "invalid_sdp"


class MediaNodeFailed(BrokerError):
    """The chosen media node failed or refused the offer; ``media_code`` says why."""

    code = "media_node_error"


def by_code(code: str) -> type[BrokerError]:
    """The error class reported under ``code`` (to raise a stored refusal again)."""
    for cls in BrokerError.__subclasses__():
        if cls.code == code:
            return cls
    return BrokerError
