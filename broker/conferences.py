"""Conferences of an outage: the client's most important meetings, each with its importance (priority,
1 = most important), the ports promised to it (reserve) and the most it may hold (max)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from infra.redisconn import publish
from infra.settings import Settings
from infra.text import as_str
from quotas import keys
from quotas.ledger import KINDS, PortLedger

from . import errors, ids
from .outages import OutageDesk, iso

DEFAULT_PRIORITY = 5
Ports = dict[str, int]
Ceiling = dict[str, int | None]


class ConferenceDesk:
    def __init__(
        self, redis: aioredis.Redis, settings: Settings, ledger: PortLedger, outages: OutageDesk,
        clock: Callable[[], datetime],
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.ledger = ledger
        self.outages = outages
        self.clock = clock

    def _capacity(self) -> Ports:
        return {"audio": self.settings.audio_ports, "video": self.settings.video_ports}

    def check_ports(self, reserve: Ports | None, ceiling: Ceiling | None) -> None:
        """422 with field errors: a ceiling over the outage's capacity or below the conference's reserve."""
        problems = []
        capacity = self._capacity()
        for k in KINDS:
            top = (ceiling or {}).get(k)
            if top is not None and top > capacity[k]:
                problems.append({"loc": ["body", "max", k], "msg": f"must be at most the outage's {capacity[k]} "
                                 f"{k} ports", "type": "less_than_equal"})
            low = (reserve or {}).get(k)
            if low is not None and low > capacity[k]:
                problems.append({"loc": ["body", "reserve", k], "msg": f"must be at most the outage's {capacity[k]} "
                                 f"{k} ports", "type": "less_than_equal"})
            if top is not None and low is not None and top < low:
                problems.append({"loc": ["body", "max", k], "msg": f"must not be below the reserve ({low})",
                                 "type": "max_below_reserve"})
        if problems:
            raise errors.ValidationFailed("The conference's ports do not fit", errors=problems)

    async def create(
        self, outage_id: str, title: str, priority: int = DEFAULT_PRIORITY, reserve: Ports | None = None,
        ceiling: Ceiling | None = None,
    ) -> dict[str, Any]:
        _, fields = await self.outages.require(outage_id)
        if fields.get("state") != "active":
            raise errors.OutageNotActive(f"Outage {outage_id} is not active: no new conference")
        reserve = {"audio": 0, "video": 0, **(reserve or {})}
        ceiling = {"audio": None, "video": None, **(ceiling or {})}
        self.check_ports(reserve, ceiling)
        conference_id = ids.new_conference_id(outage_id)
        doc = {"id": conference_id, "outage": outage_id, "title": title, "created_at": iso(self.clock())}
        status = await self.ledger.add_conference(
            outage_id, conference_id, doc, priority=priority, reserve=reserve, ceiling=ceiling
        )
        if status == "ended":
            raise errors.OutageNotActive(f"Outage {outage_id} is no longer active")
        if status == "reserve_exceeds_capacity":
            raise errors.ReserveExceedsCapacity(
                "The reserves of this outage's conferences would sum past its capacity "
                f"({self.settings.audio_ports} audio, {self.settings.video_ports} video)"
            )
        return {**doc, "priority": priority, "reserve": reserve, "max": ceiling}

    async def doc(self, conference_id: str) -> dict[str, Any]:
        """The conference's stored doc; ConferenceNotFound when the id names none."""
        outage_id = ids.outage_of(conference_id)
        if outage_id is None or not ids.is_conference_id(conference_id):
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        raw = await self.redis.hget(keys.conferences(outage_id), conference_id)  # type: ignore[misc]
        if raw is None:
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        return dict(json.loads(as_str(raw)))

    async def get(self, conference_id: str, *, with_ids: bool = True, require_active: bool = False) -> dict[str, Any]:
        """The conference with its settings, the ports it holds and its live participants.

        ``require_active`` (a participant's view): an ended outage or a closed conference answers 410.
        """
        outage_id = ids.outage_of(conference_id)
        found = await self.outages.fields(outage_id) if outage_id else None
        if found is None:
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        _, fields = found
        state = "restored" if fields.get("state") == "expired" else fields.get("state", "active")
        try:
            doc = await self.doc(conference_id)
        except errors.ConferenceNotFound:
            if require_active:
                raise errors.OutageEnded("This conference has been closed by the hotline",
                                         reason="conference_closed") from None
            raise
        if require_active and state != "active":
            planned = fields.get("end_reason") == "planned_end"
            raise errors.OutageEnded(
                "This substitute conference has ended as planned" if planned else
                "The client's own conference server is back: this substitute conference has ended",
                reason="outage_planned_end" if planned else "outage_restored",
            )
        assert outage_id is not None
        settings = (await self.ledger.conference_settings(outage_id, [conference_id]))[conference_id]
        held = (await self.ledger.conference_use(outage_id)).get(conference_id, {"audio": 0, "video": 0})
        participants = []
        for p in await self.ledger.live_participants(outage_id, conference_id):
            entry = {"id": p.id, "display_name": p.doc.get("display_name", ""), "kind": p.kind,
                     "requested_kind": p.doc.get("requested_kind", p.kind), "state": p.state}
            if not with_ids:
                del entry["id"]
            participants.append(entry)
        return {
            **doc,
            **settings,
            "in_use": held,
            "outage_state": state,
            "window_ends_at": fields.get("window_ends_at") or None,
            "participants": participants,
        }

    async def update(
        self, conference_id: str, *, title: str | None = None, priority: int | None = None,
        reserve: Ports | None = None, ceiling: Ceiling | None = None,
    ) -> dict[str, Any]:
        """Changes title, priority, reserve and max atomically with the ledger; nobody is evicted by it."""
        doc = await self.doc(conference_id)
        outage_id = doc["outage"]
        current = (await self.ledger.conference_settings(outage_id, [conference_id]))[conference_id]
        self.check_ports({**current["reserve"], **(reserve or {})}, {**current["max"], **(ceiling or {})})
        new_doc = {**doc, "title": title} if title is not None else None
        change = await self.ledger.update_conference(
            outage_id, conference_id, doc=new_doc, priority=priority, reserve=reserve, ceiling=ceiling
        )
        if change.status == "ended":
            raise errors.OutageNotActive(f"Outage {outage_id} is not active")
        if change.status == "no_conference":
            raise errors.ConferenceNotFound(f"No conference {conference_id!r}")
        if change.status == "reserve_exceeds_capacity":
            raise errors.ReserveExceedsCapacity("The reserves of this outage's conferences would sum past its capacity")
        if change.status == "max_below_reserve":  # changed meanwhile by another request
            raise errors.ValidationFailed("The conference's ports do not fit", errors=[
                {"loc": ["body", "max", change.kind], "msg": "must not be below the reserve", "type": "max_below_reserve"}])
        return await self.get(conference_id)

    async def delete(self, conference_id: str, by: str = "") -> list[str]:
        """Closes the conference: its participants end, its ports are freed; their ids."""
        doc = await self.doc(conference_id)
        released = await self.ledger.remove_conference(doc["outage"], conference_id, by)
        event = {"type": "conference_closed", "outage": doc["outage"], "conference": conference_id,
                 "participants": released}
        await publish(self.redis, keys.EVENTS, json.dumps(event))
        return released

    async def of_outage(self, outage_id: str) -> list[dict[str, Any]]:
        await self.outages.require(outage_id)
        return [await self.get(cid) for cid in await self.outages.conference_ids(outage_id)]
