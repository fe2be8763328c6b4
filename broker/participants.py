"""Participants: who holds the outage's ports. Admission is one ledger script (importance, reserves,
ceilings, the conference's rate limit and preemption decided together); leaving frees the port at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from infra import logcontext
from infra.redisconn import publish
from infra.settings import Settings
from quotas import keys
from quotas.ledger import LedgerParticipant, PortLedger, RateLimit

from . import errors, ids
from .outages import OutageDesk, iso, iso_ms
from .webhooks import Webhooks


@dataclass(frozen=True)
class Admission:
    participant: dict[str, Any]
    downgraded: bool
    preempted: str | None  # the participant whose port this admission took
    replayed: bool  # a retried request (Idempotency-Key): the participant its first attempt admitted


def _fingerprint(conference_id: str, display_name: str, kind: str, downgrade: bool) -> str:
    return hashlib.sha256(json.dumps([conference_id, display_name, kind, downgrade]).encode()).hexdigest()[:32]


class ParticipantDesk:
    def __init__(
        self, redis: aioredis.Redis, settings: Settings, ledger: PortLedger, outages: OutageDesk,
        webhooks: Webhooks, clock: Callable[[], datetime],
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.ledger = ledger
        self.outages = outages
        self.webhooks = webhooks
        self.clock = clock

    async def admit(
        self, conference_id: str, display_name: str, kind: str, downgrade: bool = True,
        idempotency_key: str | None = None,
    ) -> Admission:
        outage_id = ids.outage_of(conference_id)
        if outage_id is None or not ids.is_conference_id(conference_id):
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        participant_id = ids.new_participant_id(outage_id)
        logcontext.bind(outage=outage_id, conference=conference_id, participant=participant_id)
        doc = {"id": participant_id, "conference": conference_id, "outage": outage_id, "display_name": display_name,
               "requested_kind": kind, "admitted_at": iso(self.clock())}
        idempotency = None
        if idempotency_key:
            idempotency = (idempotency_key, _fingerprint(conference_id, display_name, kind, downgrade))
        rate = RateLimit(self.settings.admission_rate_burst, self.settings.admission_rate_per_s)
        result = await self.ledger.admit(
            outage_id, conference_id, participant_id, kind, downgrade,  # type: ignore[arg-type]
            int(self.settings.admission_lease_s * 1000), doc, display_name=display_name, rate=rate,
            idempotency=idempotency,
        )
        if result.status == "ended":
            raise await self._ended(outage_id)
        if result.status == "no_conference":
            state = await self.outages._state(outage_id)
            if state not in (None, "active"):
                raise await self._ended(outage_id)
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        if result.status == "rate_limited":
            raise errors.RateLimited(
                "This conference's link is admitting people faster than a meeting does; try again shortly",
                retry_after=max(1, -(-result.retry_after_ms // 1000)),
            )
        if result.status == "idempotency_mismatch":
            raise errors.IdempotencyKeyReused("This Idempotency-Key was used for a different admission")
        if result.status == "full":
            await self.webhooks.capacity_exhausted(outage_id, conference_id, result)
            what = (f"This conference may hold at most {result.capacity} {result.kind} ports"
                    if result.reason == "conference_max" else
                    f"All {result.capacity} {result.kind} ports of this outage are in use by conferences at least "
                    "as important as this one")
            raise errors.CapacityExhausted(
                what, kind=result.kind, capacity=result.capacity, in_use=result.in_use, reason=result.reason,
                retry_after=self.settings.retry_after_s,
            )
        if result.preempted and result.preempted_conference and result.kind:
            await self.webhooks.participant_preempted(
                outage_id, result.preempted_conference, result.preempted, result.kind, conference_id
            )
        replayed = result.participant_id != participant_id
        participant = await self.get(result.participant_id) if replayed else {
            **doc,
            "kind": result.kind,
            "downgraded": result.downgraded,
            "state": "admitted",
            "state_reason": None,
            "live": True,
            "lease_expires_at": iso_ms(result.lease_expires_ms),
        }
        return Admission(participant, result.downgraded, result.preempted, replayed)

    async def _ended(self, outage_id: str) -> errors.OutageEnded:
        found = await self.outages.fields(outage_id)
        planned = found is not None and found[1].get("end_reason") == "planned_end"
        return errors.OutageEnded(
            "This substitute conference has ended as planned" if planned else
            "The client's own conference server is back: this substitute conference has ended",
            reason="outage_planned_end" if planned else "outage_restored",
        )

    @staticmethod
    def present(p: LedgerParticipant, outage_id: str) -> dict[str, Any]:
        kind = p.kind or p.doc.get("requested_kind")
        return {
            "id": p.id,
            "conference": p.conference or p.doc.get("conference"),
            "outage": outage_id,
            "display_name": p.doc.get("display_name", ""),
            "kind": kind,
            "requested_kind": p.doc.get("requested_kind", kind),
            "downgraded": kind != p.doc.get("requested_kind", kind),
            "state": p.state,
            "state_reason": p.state_reason,
            "admitted_at": p.doc.get("admitted_at"),
            "live": p.lease_expires_ms is not None,
            "lease_expires_at": iso_ms(p.lease_expires_ms),
        }

    async def get(self, participant_id: str) -> dict[str, Any]:
        outage_id = ids.outage_of(participant_id)
        if outage_id is None or not ids.is_participant_id(participant_id):
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        found = await self.ledger.participant(outage_id, participant_id)
        if found is None:
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        return self.present(found, outage_id)

    async def leave(self, participant_id: str) -> bool:
        """Frees the participant's port at once (idempotent: False when it had ended already); one ledger
        call, which also tells the media nodes."""
        outage_id = ids.outage_of(participant_id)
        if outage_id is None or not ids.is_participant_id(participant_id):
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        event = {"type": "participant_left", "outage": outage_id, "participant": participant_id}
        status, _ = await self.ledger.leave(outage_id, participant_id, event)
        if status == "not_found":
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        return status == "released"

    async def sweep(self) -> dict[str, list[str]]:
        """Reclaims expired leases everywhere and tells the media nodes."""
        reclaimed = await self.ledger.sweep()
        for outage_id, pids in reclaimed.items():
            for pid in pids:
                event = {"type": "participant_left", "outage": outage_id, "participant": pid}
                await publish(self.redis, keys.EVENTS, json.dumps(event))
        return reclaimed
