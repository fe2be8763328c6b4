"""Outages: a client's server declared down, from the hotline's call to its restore (clauses 3-3, 3-5, 4-1).

An outage is ``active`` until the hotline restores it (or a planned end the hotline set passes): Backup+
lasts as long as the client's server is down, no clock ends it. One active outage per server
(contract + serial), each with its own 8 + 10 ports. The SLA clock gives its deadlines; taking charge
is recorded once (acknowledge); each deadline is counted met or missed once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from infra import logcontext
from infra.redisconn import publish
from infra.settings import Settings
from infra.text import as_str
from quotas import keys
from quotas.ledger import PortLedger
from quotas.scripts import ScriptRunner

from . import errors, ids, sla
from .contracts import Contract, ContractStore, check_eligibility
from .tickets import TicketBook
from .webhooks import Webhooks

log = logging.getLogger("backupplus.outages")
Clock = Callable[[], datetime]
# The active-outage marker expires unless the outage gets written, so a process that dies half-way
# does not block the server for good.
_PENDING_MARKER_MS = 15_000


def iso(t: datetime) -> str:
    """RFC 3339 in Paris time, to the second (the contract's clock has no use for microseconds)."""
    return t.astimezone(sla.PARIS).isoformat(timespec="seconds")


def iso_ms(ms: int | str | None) -> str | None:
    if ms in (None, ""):
        return None
    return iso(datetime.fromtimestamp(int(ms) / 1000, UTC))  # type: ignore[arg-type]


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass(frozen=True)
class Declaration:
    """A validated declare request (the API's pydantic model, as plain data)."""

    contract: str
    serial: str
    ticket: dict[str, Any]  # priority, company?, model?, site, contact, description
    reported_at: datetime | None


def _differs(given: str | None, known: str) -> bool:
    return given is not None and given.strip().casefold() != known.strip().casefold()


class OutageDesk:
    def __init__(
        self, redis: aioredis.Redis, settings: Settings, ledger: PortLedger, scripts: ScriptRunner,
        contracts: ContractStore, tickets: TicketBook, webhooks: Webhooks, clock: Clock,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.ledger = ledger
        self._scripts = scripts
        self.contracts = contracts
        self.tickets = tickets
        self.webhooks = webhooks
        self.clock = clock

    # --- declaring ---------------------------------------------------------------------------------
    async def intake(
        self, raw: Any, validate: Callable[[Any], Declaration], by: str = "", idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """A declare as the hotline sends it: numbered first (a ticket for every request, the refused
        ones too), then validated and declared. Returns (outage, created); an ``Idempotency-Key`` makes a
        retried request answer what the first one did, refusal included."""
        if not idempotency_key:
            return await self._intake(raw, validate, by), True
        fingerprint = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
        idem = keys.idempotency(idempotency_key)
        if not await self.redis.set(idem, f"pending|{fingerprint}", nx=True, ex=86400):
            return await self._replay(idem, fingerprint), False
        try:
            outage = await self._intake(raw, validate, by)
        except errors.BrokerError as exc:
            number = exc.extra.get("ticket_number")
            await self.redis.set(idem, f"ticket:{number}|{fingerprint}", ex=86400)
            raise
        except BaseException:
            await self.redis.delete(idem)
            raise
        await self.redis.set(idem, f"ticket:{outage['ticket']['number']}|{fingerprint}", ex=86400)
        return outage, True

    async def _intake(self, raw: Any, validate: Callable[[Any], Declaration], by: str) -> dict[str, Any]:
        number = await self.tickets.open(raw, by)
        logcontext.bind(ticket=number)
        try:
            request = validate(raw)
        except errors.ValidationFailed as exc:
            exc.extra["ticket_number"] = number
            await self.tickets.close(number, {"outcome": "refused", "code": exc.code, "detail": exc.detail})
            raise
        return await self.declare(request, number)

    async def _replay(self, idem: str, fingerprint: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            value = as_str(await self.redis.get(idem))
            if value is None:
                raise errors.IdempotencyKeyReused("The first request with this key failed; retry with a new key")
            first, _, first_fingerprint = value.partition("|")
            if first_fingerprint != fingerprint:
                raise errors.IdempotencyKeyReused()
            if first.startswith("ticket:"):
                ticket = await self.tickets.get(first.removeprefix("ticket:"))
                if ticket is not None and ticket.get("outcome") == "outage":
                    return await self.get(ticket["outage_id"])
                if ticket is not None and ticket.get("outcome") == "refused":
                    extra = {k: ticket[k] for k in ("reason", "outage_id") if ticket.get(k)}
                    raise errors.by_code(ticket["code"])(ticket.get("detail"), ticket_number=ticket["number"], **extra)
            if time.monotonic() > deadline:
                raise errors.IdempotencyKeyReused("The first request with this key is still running")
            await asyncio.sleep(0.05)

    def check_reported_at(self, reported_at: datetime | None) -> None:
        """422 invalid_reported_at: more than 5 minutes ahead or 7 days back (API.md)."""
        if reported_at is None:
            return
        now = self.clock()
        ahead = timedelta(seconds=self.settings.reported_at_max_ahead_s)
        back = timedelta(days=self.settings.reported_at_max_back_days)
        if reported_at > now + ahead or reported_at < now - back:
            raise errors.InvalidReportedAt(
                f"reported_at must be between {iso(now - back)} and {iso(now + ahead)} "
                "(at most 5 minutes ahead, 7 days back)"
            )

    async def declare(self, request: Declaration, ticket_number: str) -> dict[str, Any]:
        """Opens the outage of one server; the ticket records the outcome, accepted or refused."""
        try:
            outage = await self._declare(request, ticket_number)
        except errors.BrokerError as exc:
            exc.extra["ticket_number"] = ticket_number
            refusal = {"outcome": "refused", "code": exc.code, "detail": exc.detail}
            refusal.update({k: v for k, v in exc.extra.items() if k in ("reason", "outage_id")})
            await self.tickets.close(ticket_number, refusal)
            raise
        await self.tickets.close(ticket_number, {"outcome": "outage", "outage_id": outage["id"]})
        await self.webhooks.outage_declared(outage)
        return outage

    async def _declare(self, request: Declaration, ticket_number: str) -> dict[str, Any]:
        self.check_reported_at(request.reported_at)
        contract = await self.contracts.get(request.contract)
        if contract is None:
            raise errors.ContractNotFound(f"No contract numbered {request.contract!r}")
        now = self.clock()
        reported_at = request.reported_at or now
        reason = check_eligibility(contract, request.serial, reported_at.astimezone(sla.PARIS).date())
        if reason is not None:
            raise errors.NotEligible(reason.text, reason=reason.value)
        equipment = contract.find_equipment(request.serial)
        assert equipment is not None  # eligibility checked it
        outage_id = ids.new_outage_id()
        logcontext.bind(outage=outage_id)
        marker = keys.server_outage(contract.number, equipment.serial)
        await self._claim_server(marker, outage_id, contract, equipment.serial)
        try:
            doc = self._outage_doc(outage_id, contract, equipment.serial, equipment.model, request, ticket_number,
                                   reported_at, now)
            await self.ledger.open_outage(
                outage_id, doc, self.settings.audio_ports, self.settings.video_ports, contract=contract.number,
                serial=equipment.serial, ticket=ticket_number,
            )
            await self.redis.persist(marker)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.OUTAGES, {outage_id: ms(now)})
                pipe.sadd(keys.ACTIVE_OUTAGES, outage_id)
                await pipe.execute()
        except BaseException:
            await self._scripts.call("del_if_equal", [marker], [outage_id])
            raise
        return await self.get(outage_id)

    async def _claim_server(self, marker: str, outage_id: str, contract: Contract, serial: str) -> None:
        """SET NX of the server's active-outage marker; a stale one (its outage ended) is taken over."""
        if await self.redis.set(marker, outage_id, nx=True, px=_PENDING_MARKER_MS):
            return
        active = as_str(await self.redis.get(marker))
        if active is None or await self._state(active) in (None, "active"):
            raise errors.OutageAlreadyActive(
                f"Server {serial} of contract {contract.number} already has the active outage {active}",
                outage_id=active,
            )
        await self._scripts.call("del_if_equal", [marker], [active])
        if not await self.redis.set(marker, outage_id, nx=True, px=_PENDING_MARKER_MS):
            raise errors.OutageAlreadyActive(
                f"Server {serial} of contract {contract.number} already has an active outage",
                outage_id=as_str(await self.redis.get(marker)),
            )

    def _outage_doc(
        self, outage_id: str, contract: Contract, serial: str, model: str, request: Declaration, ticket_number: str,
        reported_at: datetime, now: datetime,
    ) -> dict[str, Any]:
        given = request.ticket
        company, model_given = given.get("company"), given.get("model")
        mismatch = {}
        if _differs(company, contract.client.company):
            mismatch["company"] = {"given": company, "contract": contract.client.company}
        if _differs(model_given, model):
            mismatch["model"] = {"given": model_given, "equipment": model}
        times = sla.compute(reported_at, given["priority"])
        return {
            "id": outage_id,
            "contract": contract.number,
            "client": contract.client.company,
            "serial": serial,
            "ticket": {
                "number": ticket_number,
                "priority": given["priority"],
                "company": company or contract.client.company,
                "model": model_given or model,
                "site": given["site"],
                "contact": given["contact"],
                "description": given["description"],
                "mismatch": mismatch or None,
            },
            "reported_at": iso(times.reported_at),
            "taken_at": iso(times.taken_at),
            "ack_deadline": iso(times.ack_deadline),
            "restore_deadline": iso(times.restore_deadline),
            "capacity": {
                "audio": self.settings.audio_ports,
                "video": self.settings.video_ports,
                "max_video_height": self.settings.max_video_height,
            },
            "declared_at": iso(now),
        }

    # --- reading -----------------------------------------------------------------------------------
    async def _state(self, outage_id: str) -> str | None:
        value = as_str(await self.redis.hget(keys.outage_doc(outage_id), "state"))
        return "restored" if value == "expired" else value  # the earlier version's "expired" ended it too

    async def fields(self, outage_id: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """(the declaration doc, the ledger's fields) of an outage; None when unknown."""
        if not ids.is_outage_id(outage_id):
            return None
        fields = await self.ledger.outage_fields(outage_id)
        if not fields:
            return None
        return json.loads(fields["doc"]), fields

    async def require(self, outage_id: str) -> tuple[dict[str, Any], dict[str, str]]:
        found = await self.fields(outage_id)
        if found is None:
            raise errors.OutageNotFound(f"No outage {outage_id!r}")
        return found

    async def get(self, outage_id: str) -> dict[str, Any]:
        doc, fields = await self.require(outage_id)
        return await self.present(doc, fields)

    async def present(self, doc: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
        """The outage as API.md shows it: the declaration, its lifecycle and the ports in use now."""
        outage_id = doc["id"]
        state = "restored" if fields.get("state") == "expired" else fields.get("state", "active")
        acknowledged_at = iso_ms(fields.get("acknowledged_at"))
        ack_deadline = datetime.fromisoformat(doc["ack_deadline"])
        restore_deadline = datetime.fromisoformat(doc["restore_deadline"])
        ended_at = iso_ms(fields.get("ended_at")) if fields.get("ended_at", "").isdigit() else doc.get("ended_at")
        usage = await self.ledger.usage(outage_id)
        return {
            **{k: v for k, v in doc.items() if k not in ("state", "window_ends_at", "ended_at", "conferences")},
            "state": state,
            "acknowledged_at": acknowledged_at,
            "acknowledged_by": fields.get("acknowledged_by"),
            "ack_met": None if acknowledged_at is None else datetime.fromisoformat(acknowledged_at) <= ack_deadline,
            "restore_overdue": state == "active" and self.clock() > restore_deadline,
            "window_ends_at": fields.get("window_ends_at") or None,
            "ended_at": ended_at,
            "end_reason": fields.get("end_reason") or (None if state == "active" else "restored"),
            "in_use": usage["in_use"],
            "conferences": await self.conference_ids(outage_id),
        }

    async def conference_ids(self, outage_id: str) -> list[str]:
        """The outage's conferences, most important first (priority 1 first, then oldest)."""
        raw = await self.redis.hgetall(keys.conferences(outage_id))  # type: ignore[misc]
        ids_ = [as_str(k) for k in raw]
        settings = await self.ledger.conference_settings(outage_id, ids_) if ids_ else {}
        docs = [json.loads(as_str(v)) for v in raw.values()]
        docs.sort(key=lambda d: (settings.get(d["id"], {}).get("priority", 5), d.get("created_at", ""), d["id"]))
        return [d["id"] for d in docs]

    async def all(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        if state == "active":
            outage_ids = sorted(as_str(o) for o in await self.redis.smembers(keys.ACTIVE_OUTAGES))  # type: ignore[misc]
        else:
            outage_ids = [as_str(o) for o in await self.redis.zrevrange(keys.OUTAGES, 0, limit - 1)]
        result = []
        for outage_id in outage_ids:
            found = await self.fields(outage_id)
            if found is None:
                continue
            outage = await self.present(*found)
            if state is None or outage["state"] == state:
                result.append(outage)
        return result

    async def events(self, outage_id: str, after: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """The outage's audit trail (every decision, from the script that made it), oldest first."""
        return [{**e, "at_iso": iso_ms(e.get("at"))} for e in await self.ledger.audit_events(outage_id, after, limit)]

    # --- the hotline's actions ---------------------------------------------------------------------
    async def acknowledge(self, outage_id: str, by: str) -> dict[str, Any]:
        """Records taking charge once; a second call returns the first."""
        doc, _ = await self.require(outage_id)
        deadline = datetime.fromisoformat(doc["ack_deadline"])
        status, _, counted = await self.ledger.acknowledge(outage_id, by, ms(deadline))
        if counted:
            await self.redis.hincrby(keys.SLA_DEADLINES, f"ack:{counted}", 1)  # type: ignore[misc]
        outage = await self.get(outage_id)
        if status == "acknowledged":
            await self.webhooks.outage_acknowledged(outage)
        return outage

    async def set_planned_end(self, outage_id: str, when: datetime | None, by: str = "") -> dict[str, Any]:
        """Sets (or clears, with None) a planned end of Backup+; participants are warned before it."""
        _, fields = await self.require(outage_id)
        if fields.get("state") != "active":
            raise errors.OutageNotActive(f"Outage {outage_id} is {await self._state(outage_id)}")
        if when is not None and when <= self.clock():
            raise errors.InvalidWindow("window_ends_at must be in the future (or null to clear the planned end)")
        if not await self.ledger.set_planned_end(outage_id, None if when is None else iso(when), by):
            raise errors.OutageNotActive(f"Outage {outage_id} is no longer active")
        return await self.get(outage_id)

    async def restore(self, outage_id: str, by: str = "", reason: str = "restored") -> dict[str, Any]:
        """The client's server is back (or the planned end came): every participant ended, ports freed."""
        doc, _ = await self.require(outage_id)
        deadline = datetime.fromisoformat(doc["restore_deadline"])
        closed = await self.ledger.close_outage(outage_id, reason, ms(deadline), by=by)  # type: ignore[arg-type]
        if closed is None:
            raise errors.OutageNotActive(f"Outage {outage_id} is already {await self._state(outage_id)}")
        released, counted = closed
        await self._after_end(doc, reason, released, counted)
        return await self.get(outage_id)

    async def _after_end(self, doc: dict[str, Any], reason: str, released: list[str], counted: str) -> None:
        outage_id = doc["id"]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(keys.ACTIVE_OUTAGES, outage_id)
            pipe.hincrby(keys.OUTAGE_END_COUNTS, "restored", 1)
            if counted:
                pipe.hincrby(keys.SLA_DEADLINES, f"restore:{counted}", 1)
            await pipe.execute()
        await self._scripts.call("del_if_equal", [keys.server_outage(doc["contract"], doc["serial"])], [outage_id])
        event = {"type": "outage_ended", "outage": outage_id, "state": "restored", "reason": reason,
                 "participants": released}
        await publish(self.redis, keys.EVENTS, json.dumps(event))
        await self.webhooks.outage_ended({**doc, "end_reason": reason}, "restored", released)

    # --- what every broker does in the background ---------------------------------------------------
    async def lifecycle_tick(self) -> list[str]:
        """Ends the outages whose planned end has come, counts the deadlines passed unmet. Safe in every
        broker process at once (each step is one atomic script). Returns the outages it ended."""
        now = self.clock()
        ended = []
        for outage_id in await self.ledger.active_outages():
            found = await self.fields(outage_id)
            if found is None or found[1].get("state") != "active":
                await self.redis.srem(keys.ACTIVE_OUTAGES, outage_id)  # type: ignore[misc]
                continue
            doc, fields = found
            ack, restore = await self.ledger.sla_overdue(
                outage_id, ms(datetime.fromisoformat(doc["ack_deadline"])),
                ms(datetime.fromisoformat(doc["restore_deadline"])),
            )
            for deadline, result in (("ack", ack), ("restore", restore)):
                if result:
                    await self.redis.hincrby(keys.SLA_DEADLINES, f"{deadline}:{result}", 1)  # type: ignore[misc]
            if restore:
                await self.webhooks.outage_restore_overdue(doc)
            planned = fields.get("window_ends_at")
            if planned and datetime.fromisoformat(planned) <= now:
                try:
                    await self.restore(outage_id, by="planned end", reason="planned_end")
                    ended.append(outage_id)
                except errors.OutageNotActive:
                    pass  # another broker ended it first
        return ended

    async def audit_tick(self) -> int:
        """The ledger's audit on every active outage: repairs what disagrees; how many repairs it made."""
        total = 0
        for outage_id in await self.ledger.active_outages():
            repairs, expired = await self.ledger.repair(outage_id)
            if repairs:
                log.warning("ledger audit: outage %s needed %d repairs", outage_id, repairs)
                await self.redis.hincrby(keys.LEDGER_REPAIRS, "total", repairs)  # type: ignore[misc]
                total += repairs
            for pid in expired:
                await publish(self.redis, keys.EVENTS, json.dumps(
                    {"type": "participant_left", "outage": outage_id, "participant": pid}))
        return total
