"""The events Backup+ sends to webhook receivers, and :class:`Webhooks`, the broker's way to emit them.

``emit(event_type, data)`` queues one signed delivery per configured URL (one script call; none when
no URL is configured). The named methods build each event's ``data``; three of them are hooks that
the outage lifecycle and the ledger call once they report those decisions (acknowledged, restore
overdue, preempted). Emitting never fails the decision it reports: a Redis error is logged.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis

from infra.luascripts import LuaScripts
from infra.settings import Settings

from . import keys

log = logging.getLogger("backupplus.webhooks")

OUTAGE_DECLARED = "outage.declared"
OUTAGE_ACKNOWLEDGED = "outage.acknowledged"
OUTAGE_RESTORED = "outage.restored"
OUTAGE_RESTORE_OVERDUE = "outage.restore_overdue"
CAPACITY_EXHAUSTED = "capacity.exhausted"
PARTICIPANT_PREEMPTED = "participant.preempted"
EVENT_TYPES = (
    OUTAGE_DECLARED,
    OUTAGE_ACKNOWLEDGED,
    OUTAGE_RESTORED,
    OUTAGE_RESTORE_OVERDUE,
    CAPACITY_EXHAUSTED,
    PARTICIPANT_PREEMPTED,
)
SCRIPTS = ("enqueue", "lease", "settle")


class Refusal(Protocol):
    """What a refusal for capacity says: the kind refused, its capacity and the ports in use."""

    @property
    def kind(self) -> str | None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def in_use(self) -> int: ...


def _outage_summary(outage: dict[str, Any]) -> dict[str, Any]:
    """What a ticketing system needs to open or update its ticket; the contact and description stay
    in the broker (``GET /v1/outages/{id}`` with an operator token has them)."""
    ticket = outage.get("ticket", {})
    return {
        "outage": outage["id"],
        "ticket": ticket.get("number"),
        "priority": ticket.get("priority"),
        "site": ticket.get("site"),
        "contract": outage.get("contract"),
        "client": outage.get("client"),
        "serial": outage.get("serial"),
        "reported_at": outage.get("reported_at"),
        "ack_deadline": outage.get("ack_deadline"),
        "restore_deadline": outage.get("restore_deadline"),
    }


class Webhooks:
    def __init__(self, redis: aioredis.Redis, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.urls = settings.webhook_urls
        self._scripts = LuaScripts(redis, __package__ or "broker.webhooks", SCRIPTS)
        # Set on each event queued here, so that this process's worker delivers it without waiting to poll.
        self.wake: Callable[[], None] = lambda: None

    async def emit(
        self, event_type: str, data: dict[str, Any], *, throttle: str | None = None, throttle_s: float = 0.0
    ) -> str | None:
        """Queues the event for every URL; returns its ``webhook-id``, or None when none is configured,
        the event is throttled (``throttle`` names it; one per ``throttle_s``) or Redis failed."""
        if not self.urls:
            return None
        now = self.clock()
        msg_id = f"msg_{secrets.token_hex(12)}"
        payload = json.dumps(
            {"type": event_type, "timestamp": datetime.fromtimestamp(now, UTC).isoformat(), "data": data},
            separators=(",", ":"),
        )
        delivery_keys = [keys.delivery(f"{msg_id}.{i}") for i in range(1, len(self.urls) + 1)]
        throttle_ms = int(throttle_s * 1000) if throttle else 0
        try:
            queued = await self._scripts.call(
                "enqueue",
                [keys.DUE, keys.throttle(throttle or "none"), *delivery_keys],
                [throttle_ms, int(now * 1000), msg_id, event_type, payload, *self.urls],
            )
        except Exception as exc:  # noqa: BLE001 - never fail the decision being reported
            log.error("webhook %s not queued (%s: %s): %s", event_type, type(exc).__name__, exc, msg_id)
            return None
        if not int(queued):
            return None
        log.info("webhook %s queued as %s for %d endpoint(s)", event_type, msg_id, len(self.urls))
        self.wake()
        return msg_id

    # --- the events ----------------------------------------------------------------------------------
    async def outage_declared(self, outage: dict[str, Any]) -> str | None:
        return await self.emit(OUTAGE_DECLARED, _outage_summary(outage))

    async def outage_ended(self, outage: dict[str, Any], state: str, released: list[str]) -> str | None:
        """``outage.restored`` when the hotline restored it (an outage whose window ran out sends none)."""
        if state != "restored":
            return None
        data = {**_outage_summary(outage), "state": state, "participants_released": len(released)}
        return await self.emit(OUTAGE_RESTORED, data)

    async def capacity_exhausted(self, outage_id: str, conference_id: str, refusal: Refusal) -> str | None:
        """A join refused for capacity; at most one per outage and kind per ``webhook_capacity_every_s``."""
        data = {"outage": outage_id, "conference": conference_id, "kind": refusal.kind,
                "capacity": refusal.capacity, "in_use": refusal.in_use}
        return await self.emit(
            CAPACITY_EXHAUSTED, data, throttle=f"capacity:{outage_id}:{refusal.kind}",
            throttle_s=self.settings.webhook_capacity_every_s,
        )

    # Hooks for decisions reported elsewhere: the outage lifecycle (acknowledge, restore deadline) and
    # the ledger (preemption) call them once they make those decisions.
    async def outage_acknowledged(self, outage: dict[str, Any]) -> str | None:
        data = {**_outage_summary(outage), "acknowledged_at": outage.get("acknowledged_at"),
                "ack_met": outage.get("ack_met")}
        return await self.emit(OUTAGE_ACKNOWLEDGED, data)

    async def outage_restore_overdue(self, outage: dict[str, Any]) -> str | None:
        return await self.emit(OUTAGE_RESTORE_OVERDUE, _outage_summary(outage))

    async def participant_preempted(
        self, outage_id: str, conference_id: str, participant_id: str, kind: str, by_conference: str
    ) -> str | None:
        data = {"outage": outage_id, "conference": conference_id, "participant": participant_id, "kind": kind,
                "by_conference": by_conference}
        return await self.emit(PARTICIPANT_PREEMPTED, data)
