"""``serve --demo``: a demo contract, one active outage and two conferences of different importance
(priority 1 with a reserve, priority 5), ready to join: fill the outage from the second link, then
join the first and watch the least important participant be preempted."""

from __future__ import annotations

from datetime import datetime

from api.auth import sign_join_token
from broker import sla
from broker.contracts import demo_contract
from broker.errors import OutageAlreadyActive
from broker.outages import Declaration
from broker.service import Broker
from infra.redisconn import connect
from infra.settings import Settings
from quotas.secret import load_keyring

DEMO_TICKET = {
    "priority": "urgent",
    "site": "Siège, Aix-en-Provence",
    "contact": "M. Durand, +33 4 00 00 00 00",
    "description": "Pont de visioconférence hors service (démo)",
}


async def load_demo(settings: Settings) -> dict[str, str]:
    """Loads (or finds again) the demo data; returns what ``serve`` prints."""
    assert settings.redis_url
    client = connect(settings.redis_url, decode_responses=True)
    try:
        broker = Broker(client, settings)
        await broker.start()
        contract = demo_contract(datetime.now(sla.PARIS).date())
        await broker.contracts.put(contract)
        serial = next(e.serial for e in contract.equipment if e.kind == "video_bridge")
        request = {"contract": contract.number, "serial": serial, "ticket": dict(DEMO_TICKET)}
        try:
            outage, _ = await broker.outages.intake(
                request, lambda raw: Declaration(raw["contract"], raw["serial"], raw["ticket"], None), by="demo"
            )
        except OutageAlreadyActive as exc:
            outage = await broker.outages.get(exc.extra["outage_id"])
        conference_ids = list(outage["conferences"])
        if not conference_ids:
            first = await broker.conferences.create(
                outage["id"], "Comité de direction", priority=1, reserve={"audio": 2, "video": 4}
            )
            second = await broker.conferences.create(outage["id"], "Équipe projet", priority=5)
            conference_ids = [first["id"], second["id"]]
        key = (await load_keyring(client)).signing_key("join")
        links = [f"{settings.base_url}/join/{sign_join_token(key, cid)}" for cid in conference_ids]
        return {"contract": contract.number, "outage": outage["id"], "join_url": links[0],
                "other_join_url": links[1] if len(links) > 1 else ""}
    finally:
        await client.aclose()
