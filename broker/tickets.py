"""Tickets: clause 3-3 gives a number to every request to the hotline, the refused ones too.

A ticket records the request as it came (what the caller gave) and then its outcome: the outage it
opened, or the code and reason it was refused with. Numbers come from one Redis counter, taken by
the same script that writes the ticket, so they are unique across broker processes and restarts and
have no gap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from infra.text import as_str
from quotas import keys
from quotas.scripts import ScriptRunner

from . import sla

# What of a request a ticket keeps, and how much of each (the request may be refused for being wrong).
_REQUEST_FIELDS = ("contract", "serial", "reported_at")
_TICKET_FIELDS = ("priority", "company", "model", "site", "contact", "description")
_MAX_TEXT = 4000


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return (value if isinstance(value, str) else json.dumps(value, default=str))[:_MAX_TEXT]


def request_record(raw: Any) -> dict[str, Any]:
    """The part of a declare body a ticket keeps, as text, whatever shape the body had."""
    body = raw if isinstance(raw, dict) else {}
    given = body.get("ticket")
    ticket: dict[str, Any] = given if isinstance(given, dict) else {}
    record: dict[str, Any] = {k: _text(body.get(k)) for k in _REQUEST_FIELDS}
    record.update({k: _text(ticket.get(k)) for k in _TICKET_FIELDS})
    return record


class TicketBook:
    def __init__(self, redis: aioredis.Redis, scripts: ScriptRunner, clock: Callable[[], datetime]) -> None:
        self.redis = redis
        self._scripts = scripts
        self._clock = clock

    async def carry_numbering_on(self) -> None:
        """Continues the earlier version's numbering (its counter had no hash tag) if there was one."""
        legacy = await self.redis.get(keys.LEGACY_TICKET_SEQ)
        if legacy is not None:
            await self.redis.set(keys.TICKET_SEQ, int(legacy), nx=True)

    async def open(self, raw_request: Any, by: str = "") -> str:
        """Numbers and records one request; its number (``BP-<year>-<nnnnnn>``)."""
        now = self._clock()
        record = {**request_record(raw_request), "received_at": now.astimezone(sla.PARIS).isoformat(timespec="seconds"),
                  "by": by[:200]}
        contract = (record.get("contract") or "")[:64]
        prefix = f"BP-{now.astimezone(sla.PARIS).year}-"
        number = await self._scripts.call(
            "ticket_open", keys.ticket_keys(contract), [prefix, json.dumps(record), int(now.timestamp() * 1000)]
        )
        return as_str(number)

    async def close(self, number: str, outcome: dict[str, Any]) -> None:
        """Records the request's outcome: ``{"outcome": "outage", "outage_id"}`` or ``{"outcome":
        "refused", "code", "reason"?, "detail"?}``."""
        await self._scripts.call("ticket_outcome", keys.ticket_keys(""), [number, json.dumps(outcome)])

    async def get(self, number: str) -> dict[str, Any] | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.TICKET_REQUESTS, number)
            pipe.hget(keys.TICKET_OUTCOMES, number)
            request, outcome = await pipe.execute()
        if request is None:
            return None
        return self._present(number, request, outcome)

    @staticmethod
    def _present(number: str, request: Any, outcome: Any) -> dict[str, Any]:
        found = json.loads(as_str(outcome)) if outcome is not None else {"outcome": "pending"}
        return {"number": number, **json.loads(as_str(request)), **found}

    async def recent(self, contract: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Tickets, newest first (of one contract when given)."""
        index = keys.contract_tickets(contract) if contract else keys.TICKETS
        numbers = [as_str(n) for n in await self.redis.zrevrange(index, 0, limit - 1)]
        if not numbers:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.TICKET_REQUESTS, numbers)
            pipe.hmget(keys.TICKET_OUTCOMES, numbers)
            requests, outcomes = await pipe.execute()
        return [self._present(n, r, o) for n, r, o in zip(numbers, requests, outcomes, strict=True) if r is not None]
