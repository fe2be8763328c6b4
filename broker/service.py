"""The broker: outages, conferences and participants, on top of the contract store and the port ledger.

Every broker process runs this same code against one shared Redis; what must be atomic is done by one
ledger script (admission, conference creation, restore), the rest is idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from infra import logcontext
from infra.settings import Settings
from quotas import keys
from quotas.ledger import PortLedger
from quotas.scripts import ScriptRunner

from . import errors, ids, sla
from .contracts import ContractStore, check_eligibility
from .webhooks import Webhooks

Clock = Callable[[], datetime]

_PENDING_MARKER_MS = 15_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """RFC 3339 in Paris time, to the second (the contract's clock has no use for microseconds)."""
    return t.astimezone(sla.PARIS).isoformat(timespec="seconds")


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass(frozen=True)
class Admission:
    participant: dict[str, Any]
    result_kind: str
    downgraded: bool


class Broker:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.ledger = PortLedger(redis)
        self._scripts = ScriptRunner(redis)
        self.contracts = ContractStore(redis)
        self.clock = clock
        self.webhooks = Webhooks(redis, settings)

    # --- outages -----------------------------------------------------------------------------------
    async def declare_outage(self, body: dict[str, Any], idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Open an outage; returns (outage, created). A retried declare with the same key returns the first."""
        if idempotency_key:
            fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
            idem = keys.idempotency(idempotency_key)
            claimed = await self.redis.set(idem, f"pending|{fingerprint}", nx=True, ex=86400)
            if not claimed:
                return await self._idempotent_replay(idem, fingerprint), False
            try:
                outage = await self._declare(body)
            except BaseException:
                await self.redis.delete(idem)
                raise
            await self.redis.set(idem, f"{outage['id']}|{fingerprint}", ex=86400)
            return outage, True
        return await self._declare(body), True

    async def _idempotent_replay(self, idem: str, fingerprint: str) -> dict:
        deadline = time.monotonic() + 10
        while True:
            value = await self.redis.get(idem)
            if value is None:
                raise errors.IdempotencyKeyReused("The first request with this key failed; retry with a new key")
            outage_id, _, first_fingerprint = str(value).partition("|")
            if first_fingerprint != fingerprint:
                raise errors.IdempotencyKeyReused()
            if outage_id != "pending":
                return await self.get_outage(outage_id)
            if time.monotonic() > deadline:
                raise errors.IdempotencyKeyReused("The first request with this key is still running")
            await asyncio.sleep(0.05)

    async def _declare(self, body: dict[str, Any]) -> dict:
        contract = await self.contracts.get(body["contract"])
        if contract is None:
            raise errors.ContractNotFound(f"No contract numbered {body['contract']!r}")
        now = self.clock()
        reported_at: datetime = body.get("reported_at") or now
        reason = check_eligibility(contract, body["serial"], reported_at.astimezone(sla.PARIS).date())
        if reason is not None:
            raise errors.NotEligible(reason.text, reason=reason.value)
        ticket_in = body["ticket"]
        times = sla.compute(reported_at, ticket_in["priority"])
        window_ends = sla.window_end(times.restore_deadline, self.settings.window_extra_business_days)
        outage_id = ids.new_outage_id()
        marker = keys.contract_active_outage(contract.number)
        # The marker expires unless the outage gets written, so a process that dies half-way
        # does not block the contract for good.
        if not await self.redis.set(marker, outage_id, nx=True, px=_PENDING_MARKER_MS):
            active = await self.redis.get(marker)
            if active is None or await self._state(str(active)) in (None, "active"):
                raise errors.OutageAlreadyActive(
                    f"Contract {contract.number} already has the active outage {active!s}", outage_id=str(active)
                )
            # A stale marker (that outage has ended): take it over atomically.
            await self._scripts.call("del_if_equal", [marker], [str(active)])
            if not await self.redis.set(marker, outage_id, nx=True, px=_PENDING_MARKER_MS):
                raise errors.OutageAlreadyActive(
                    f"Contract {contract.number} already has an active outage",
                    outage_id=str(await self.redis.get(marker)),
                )
        try:
            seq = await self.redis.incr(keys.TICKET_SEQ)
            ticket_number = f"BP-{now.astimezone(sla.PARIS).year}-{seq:06d}"
            logcontext.bind(outage=outage_id, ticket=ticket_number)
            doc = {
                "id": outage_id,
                "contract": contract.number,
                "client": contract.client.company,
                "serial": body["serial"],
                "ticket": {"number": ticket_number, **ticket_in},
                "reported_at": iso(times.reported_at),
                "taken_at": iso(times.taken_at),
                "ack_deadline": iso(times.ack_deadline),
                "restore_deadline": iso(times.restore_deadline),
                "window_ends_at": iso(window_ends),
                "capacity": {
                    "audio": self.settings.audio_ports,
                    "video": self.settings.video_ports,
                    "max_video_height": self.settings.max_video_height,
                },
                "declared_at": iso(now),
                "ended_at": None,
            }
            await self.ledger.open_outage(outage_id, doc, self.settings.audio_ports, self.settings.video_ports)
            await self.redis.persist(marker)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(keys.OUTAGES, {outage_id: _ms(now)})
                pipe.sadd(keys.ACTIVE_OUTAGES, outage_id)
                await pipe.execute()
        except BaseException:
            await self._scripts.call("del_if_equal", [marker], [outage_id])
            raise
        outage = await self.get_outage(outage_id)
        await self.webhooks.outage_declared(outage)
        return outage

    async def _state(self, outage_id: str) -> str | None:
        value = await self.redis.hget(keys.outage_doc(outage_id), "state")
        return None if value is None else str(value)

    async def _raw_outage(self, outage_id: str) -> tuple[dict, str] | None:
        if not ids.is_outage_id(outage_id):
            return None
        raw = await self.redis.hgetall(keys.outage_doc(outage_id))
        if not raw:
            return None
        return json.loads(raw["doc"]), str(raw["state"])

    async def get_outage(self, outage_id: str) -> dict:
        found = await self._raw_outage(outage_id)
        if found is None:
            raise errors.OutageNotFound(f"No outage {outage_id!r}")
        doc, state = found
        return await self._present_outage(doc, state)

    async def _present_outage(self, doc: dict, state: str) -> dict:
        outage_id = doc["id"]
        usage = await self.ledger.usage(outage_id)
        return {**doc, "state": state, "in_use": usage["in_use"], "conferences": await self._conference_ids(outage_id)}

    async def _conference_ids(self, outage_id: str) -> list[str]:
        """The outage's conferences, most important first (priority 1 first, then oldest)."""
        docs = [json.loads(v) for v in (await self.redis.hgetall(keys.conferences(outage_id))).values()]
        docs.sort(key=lambda d: (d.get("priority", 1), d.get("created_at", ""), d["id"]))
        return [d["id"] for d in docs]

    async def list_outages(self, state: str | None = None, limit: int = 200) -> list[dict]:
        if state == "active":
            outage_ids = sorted(map(str, await self.redis.smembers(keys.ACTIVE_OUTAGES)))
        else:
            outage_ids = [str(o) for o in await self.redis.zrevrange(keys.OUTAGES, 0, limit - 1)]
        result = []
        for outage_id in outage_ids:
            found = await self._raw_outage(outage_id)
            if found is None:
                continue
            doc, current = found
            if state is None or current == state:
                result.append(await self._present_outage(doc, current))
        return result

    async def end_outage(self, outage_id: str, state: str) -> dict:
        """Restore (hotline) or expire (window passed): every port released, every call ended."""
        found = await self._raw_outage(outage_id)
        if found is None:
            raise errors.OutageNotFound(f"No outage {outage_id!r}")
        released = await self.ledger.close_outage(outage_id, state, iso(self.clock()))  # type: ignore[arg-type]
        if released is None:
            raise errors.OutageNotActive(f"Outage {outage_id} is already {found[1]}")
        await self._after_end(found[0], state, released)
        return await self.get_outage(outage_id)

    async def _after_end(self, doc: dict, state: str, released: list[str]) -> None:
        outage_id = doc["id"]
        await self.redis.srem(keys.ACTIVE_OUTAGES, outage_id)
        await self.redis.hincrby(keys.OUTAGE_END_COUNTS, state, 1)
        await self._scripts.call("del_if_equal", [keys.contract_active_outage(doc["contract"])], [outage_id])
        await self.publish(
            {"type": "outage_ended", "outage": outage_id, "state": state, "participants": released}
        )
        await self.webhooks.outage_ended(doc, state, released)

    async def extend_outage(self, outage_id: str, window_ends_at: datetime) -> dict:
        found = await self._raw_outage(outage_id)
        if found is None:
            raise errors.OutageNotFound(f"No outage {outage_id!r}")
        state = found[1]
        if state != "active":
            raise errors.OutageNotActive(f"Outage {outage_id} is {state}")
        if window_ends_at <= self.clock():
            raise errors.InvalidWindow("window_ends_at must be in the future")
        updated = await self.ledger.update_doc(outage_id, {"window_ends_at": iso(window_ends_at)})
        if updated is None:
            raise errors.OutageNotActive(f"Outage {outage_id} is no longer active")
        return await self.get_outage(outage_id)

    async def expire_due(self) -> list[str]:
        """Ends every active outage whose window has passed; safe to run in every process at once."""
        now = self.clock()
        expired = []
        for outage_id in map(str, await self.redis.smembers(keys.ACTIVE_OUTAGES)):
            found = await self._raw_outage(outage_id)
            if found is None:
                await self.redis.srem(keys.ACTIVE_OUTAGES, outage_id)
                continue
            doc, state = found
            if state == "active" and datetime.fromisoformat(doc["window_ends_at"]) <= now:
                released = await self.ledger.close_outage(outage_id, "expired", iso(now))
                if released is not None:
                    await self._after_end(doc, "expired", released)
                    expired.append(outage_id)
            elif state != "active":
                await self.redis.srem(keys.ACTIVE_OUTAGES, outage_id)
        return expired

    async def sweep_leases(self) -> dict[str, list[str]]:
        reclaimed = await self.ledger.sweep(_ms(self.clock()))
        for outage_id, pids in reclaimed.items():
            for pid in pids:
                await self.publish({"type": "participant_left", "outage": outage_id, "participant": pid})
        return reclaimed

    async def publish(self, event: dict[str, Any]) -> None:
        await self.redis.publish(keys.EVENTS, json.dumps(event))

    # --- conferences -------------------------------------------------------------------------------
    async def create_conference(self, outage_id: str, body: dict[str, Any]) -> dict:
        found = await self._raw_outage(outage_id)
        if found is None:
            raise errors.OutageNotFound(f"No outage {outage_id!r}")
        if found[1] != "active":
            raise errors.OutageNotActive(f"Outage {outage_id} is {found[1]}: no new conference")
        conference_id = ids.new_conference_id(outage_id)
        reserve = body.get("reserve") or {"audio": 0, "video": 0}
        doc = {
            "id": conference_id,
            "outage": outage_id,
            "title": body["title"],
            "priority": body.get("priority", 1),
            "reserve": {"audio": reserve["audio"], "video": reserve["video"]},
            "created_at": iso(self.clock()),
        }
        status = await self.ledger.add_conference(
            outage_id, conference_id, doc, reserve["audio"], reserve["video"]
        )
        if status == "ended":
            raise errors.OutageNotActive(f"Outage {outage_id} is no longer active")
        if status == "reserve_exceeds_capacity":
            raise errors.ReserveExceedsCapacity(
                "The reserves of this outage's conferences would sum past its capacity "
                f"({self.settings.audio_ports} audio, {self.settings.video_ports} video)"
            )
        return doc

    async def _raw_conference(self, conference_id: str) -> dict:
        outage_id = ids.outage_of(conference_id)
        if outage_id is None or not ids.is_conference_id(conference_id):
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        raw = await self.redis.hget(keys.conferences(outage_id), conference_id)
        if raw is None:
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        return dict(json.loads(raw))

    async def get_conference(self, conference_id: str, *, require_active: bool = False) -> dict:
        outage_id = ids.outage_of(conference_id)
        found = await self._raw_outage(outage_id) if outage_id else None
        if found is None:
            if require_active:
                raise errors.OutageEnded("This conference has closed", reason="conference_closed")
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        try:
            doc = await self._raw_conference(conference_id)
        except errors.ConferenceNotFound:
            if require_active:
                raise errors.OutageEnded(
                    "This conference has been closed by the hotline", reason="conference_closed"
                ) from None
            raise
        outage_doc, state = found
        if require_active and state != "active":
            raise errors.OutageEnded(
                "The client's own conference server is back: this substitute conference has ended",
                reason=f"outage_{state}",
            )
        participants = await self._participants_of(outage_doc["id"], conference_id)
        return {
            **doc,
            "outage_state": state,
            "window_ends_at": outage_doc["window_ends_at"],
            "participants": participants,
        }

    async def _participants_of(self, outage_id: str, conference_id: str) -> list[dict]:
        raw = await self.redis.hgetall(keys.participants(outage_id))
        live = set(map(str, await self.redis.hkeys(keys.lease_meta(outage_id))))
        out = []
        for pid, value in raw.items():
            p = json.loads(value)
            if p.get("conference") == conference_id and str(pid) in live:
                out.append(
                    {
                        "id": p["id"],
                        "display_name": p["display_name"],
                        "kind": p["kind"],
                        "requested_kind": p.get("requested_kind", p["kind"]),
                        "state": p.get("state", "admitted"),
                    }
                )
        out.sort(key=lambda p: p["id"])
        return out

    async def list_conferences(self, outage_id: str) -> list[dict]:
        found = await self._raw_outage(outage_id)
        if found is None:
            raise errors.OutageNotFound(f"No outage {outage_id!r}")
        return [await self.get_conference(cid) for cid in await self._conference_ids(outage_id)]

    async def delete_conference(self, conference_id: str) -> None:
        doc = await self._raw_conference(conference_id)
        released = await self.ledger.remove_conference(doc["outage"], conference_id)
        await self.publish(
            {
                "type": "conference_closed",
                "outage": doc["outage"],
                "conference": conference_id,
                "participants": released,
            }
        )

    # --- participants ------------------------------------------------------------------------------
    async def admit(self, conference_id: str, body: dict[str, Any]) -> Admission:
        outage_id = ids.outage_of(conference_id)
        if outage_id is None or not ids.is_conference_id(conference_id):
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        participant_id = ids.new_participant_id(outage_id)
        logcontext.bind(outage=outage_id, conference=conference_id, participant=participant_id)
        now = self.clock()
        doc = {
            "id": participant_id,
            "conference": conference_id,
            "outage": outage_id,
            "display_name": body["display_name"],
            "admitted_at": iso(now),
        }
        result = await self.ledger.admit(
            outage_id,
            conference_id,
            participant_id,
            body["kind"],
            bool(body.get("downgrade", True)),
            int(self.settings.admission_lease_s * 1000),
            doc,
            now_ms=_ms(now),
            overshoot=self.settings.unsafe_cap_overshoot,
        )
        if result.status == "ended":
            state = await self._state(outage_id)
            raise errors.OutageEnded(
                "The client's own conference server is back: this substitute conference has ended",
                reason=f"outage_{state or 'ended'}",
            )
        if result.status == "no_conference":
            state = await self._state(outage_id)
            if state not in (None, "active"):
                raise errors.OutageEnded("This substitute conference has ended", reason=f"outage_{state}")
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        if result.status == "full":
            await self.webhooks.capacity_exhausted(outage_id, conference_id, result)
            raise errors.CapacityExhausted(
                f"All {result.capacity} {result.kind} ports of this outage are in use",
                kind=result.kind,
                capacity=result.capacity,
                in_use=result.in_use,
                retry_after=self.settings.retry_after_s,
            )
        assert result.kind is not None
        participant = {
            **doc,
            "kind": result.kind,
            "requested_kind": body["kind"],
            "downgraded": result.downgraded,
            "state": "admitted",
            "lease_expires_at": iso(datetime.fromtimestamp(result.lease_expires_ms / 1000, UTC)),
        }
        return Admission(participant, result.kind, result.downgraded)

    async def get_participant(self, participant_id: str) -> dict:
        outage_id = ids.outage_of(participant_id)
        if outage_id is None or not ids.is_participant_id(participant_id):
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            pipe.hget(keys.participants(outage_id), participant_id)
            pipe.zscore(keys.leases(outage_id), participant_id)
            raw, expiry = await pipe.execute()
        if raw is None:
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        p = dict(json.loads(raw))
        p["live"] = expiry is not None
        if expiry is not None:
            p["lease_expires_at"] = iso(datetime.fromtimestamp(float(expiry) / 1000, UTC))
        p.setdefault("downgraded", p.get("kind") != p.get("requested_kind", p.get("kind")))
        return p

    async def leave(self, participant_id: str, conference_scope: str | None = None) -> bool:
        """Frees the participant's port at once (idempotent: False when it had left already).

        ``conference_scope``: a join token's conference; the participant must belong to it. One
        ledger call, which also tells the media nodes.
        """
        outage_id = ids.outage_of(participant_id)
        if outage_id is None or not ids.is_participant_id(participant_id):
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        event = {"type": "participant_left", "outage": outage_id, "participant": participant_id}
        status, _ = await self.ledger.leave(outage_id, participant_id, conference_scope, event)
        if status == "not_found":
            raise errors.ParticipantNotFound(f"No participant {participant_id!r}")
        if status == "forbidden":
            raise errors.Forbidden("This join token is for another conference")
        return status == "released"


