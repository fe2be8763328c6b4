"""The broker: one object per broker process, holding the desks that act on the shared Redis.

Every broker process runs this same code against one Redis; what must be atomic is one ledger script
(admission, conference changes, acknowledgement, restore), the rest is idempotent. ``tick`` and
``audit`` are the background work each process does (safe to run in all of them at once).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio as aioredis

from infra.settings import Settings
from quotas.ledger import PortLedger
from quotas.scripts import ScriptRunner

from .conferences import ConferenceDesk
from .contracts import ContractStore
from .outages import OutageDesk, iso
from .participants import Admission, ParticipantDesk
from .tickets import TicketBook
from .webhooks import Webhooks

__all__ = ["Admission", "Broker", "iso", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Broker:
    def __init__(self, redis: aioredis.Redis, settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        scripts = ScriptRunner(redis)
        self.ledger = PortLedger(redis, scripts)
        self.webhooks = Webhooks(redis, settings)
        self.contracts = ContractStore(redis)
        self.tickets = TicketBook(redis, scripts, clock)
        self.outages = OutageDesk(redis, settings, self.ledger, scripts, self.contracts, self.tickets, self.webhooks,
                                  clock)
        self.conferences = ConferenceDesk(redis, settings, self.ledger, self.outages, clock)
        self.participants = ParticipantDesk(redis, settings, self.ledger, self.outages, self.webhooks, clock)

    async def start(self) -> None:
        """What a broker checks and prepares once before it serves."""
        await self.ledger.load_scripts()
        await self.tickets.carry_numbering_on()

    async def tick(self) -> None:
        """The frequent background step: expired leases reclaimed, planned ends, deadlines counted."""
        await self.participants.sweep()
        await self.outages.lifecycle_tick()

    async def audit(self) -> int:
        """The ledger's audit over every active outage; how many repairs it made."""
        return await self.outages.audit_tick()
