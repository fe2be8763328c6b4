"""The /v1 API end to end against a real Redis: the paths, fields, statuses and codes of API.md."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from api.appkeys import BROKER
from quotas import keys

from .api_helpers import (
    AUTH,
    OPERATOR,
    api_client,
    bearer,
    contract_body,
    declare_body,
    join,
    new_conference,
    open_outage,
)


@pytest.fixture(autouse=True)
async def _fresh_redis(redis: aioredis.Redis) -> None:
    """Every test starts from an empty store (the fixture flushes it)."""


async def _problem(r, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == code and body["status"] == status and body["title"] and body["detail"]
    return dict(body)


# --- outages -----------------------------------------------------------------------------------------
async def test_declare_join_until_caps_refuse_leave_restore(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        assert outage["state"] == "active" and outage["window_ends_at"] is None  # no clock ends Backup+
        assert outage["capacity"] == {"audio": 8, "video": 10, "max_video_height": 480}
        assert outage["in_use"] == {"audio": 0, "video": 0}
        assert outage["ticket"]["number"].startswith("BP-") and outage["ticket"]["priority"] == "urgent"
        assert outage["acknowledged_at"] is None and outage["ack_met"] is None and outage["restore_overdue"] is False
        for field in ("reported_at", "taken_at", "ack_deadline", "restore_deadline"):
            assert "+" in outage[field][19:] or outage[field].endswith("Z"), field
        conf = await new_conference(client, outage["id"])
        assert conf["join_url"].endswith("/join/" + conf["join_token"]) and conf["priority"] == 5
        granted = []
        for i in range(10):
            body = await join(client, conf, f"V{i}", "video")
            assert body["kind"] == "video" and body["lease_expires_at"] and body["participant_token"].startswith("pt1.")
            assert isinstance(body["ice_servers"], list) and body["preempted"] is False
            granted.append(body)
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "late", "kind": "video", "downgrade": False},
                              headers=bearer(conf["join_token"]))
        p = await _problem(r, 409, "capacity_exhausted")
        assert (p["kind"], p["capacity"], p["in_use"]) == ("video", 10, 10)
        assert int(r.headers["Retry-After"]) > 0
        for i in range(8):
            body = await join(client, conf, f"A{i}", "video")
            assert body["kind"] == "audio" and body["downgraded"] is True
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "nope", "kind": "audio"}, headers=bearer(conf["join_token"]))
        p = await _problem(r, 409, "capacity_exhausted")
        assert (p["kind"], p["capacity"], p["in_use"]) == ("audio", 8, 8)
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 8, "video": 10}
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=bearer(conf["join_token"]))
        listed = (await r.json())["participants"]
        assert len(listed) == 18 and all("id" not in p and p["display_name"] for p in listed)
        # Leave with the participant's own token frees the port at once; the token is then dead.
        first = granted[0]
        r = await client.delete(f"/v1/participants/{first['id']}", headers=bearer(first["participant_token"]))
        assert r.status == 204
        r = await client.delete(f"/v1/participants/{first['id']}", headers=bearer(first["participant_token"]))
        await _problem(r, 401, "unauthorized")
        r = await client.delete(f"/v1/participants/{first['id']}", headers=AUTH)
        assert r.status == 204  # an operator's second DELETE is harmless
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 8, "video": 9}
        r = await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)
        restored = await r.json()
        assert restored["state"] == "restored" and restored["end_reason"] == "restored" and restored["ended_at"]
        assert restored["in_use"] == {"audio": 0, "video": 0}
        r = await client.get(f"/v1/participants/{granted[1]['id']}", headers=bearer(granted[1]["participant_token"]))
        await _problem(r, 404, "participant_not_found")  # restore deleted all but the outage's summary
        r = await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)
        await _problem(r, 409, "outage_not_active")


async def test_one_active_outage_per_server_and_every_request_ticketed(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        r = await client.post("/v1/outages", json=declare_body("NOPE"), headers=AUTH)
        refused = [(await _problem(r, 404, "contract_not_found"))["ticket_number"]]
        body = contract_body()
        body["equipment"].append({"serial": "BR-2", "brand": "Poly", "model": "RMX 4000", "kind": "video_bridge",
                                  "warranty_until": body["equipment"][0]["warranty_until"]})
        await client.put("/v1/contracts/SER-T-1", json=body, headers=AUTH)
        for serial, reason in [("XX", "equipment_not_on_contract"), ("PJ-1", "equipment_not_videoconference"),
                               ("EP-OLD", "warranty_expired")]:
            r = await client.post("/v1/outages", json=declare_body(serial=serial), headers=AUTH)
            p = await _problem(r, 422, "not_eligible")
            assert p["reason"] == reason
            refused.append(p["ticket_number"])
        r = await client.post("/v1/outages", json=declare_body(ticket={"priority": "urgent", "site": " ",
                                                                        "contact": "x"}), headers=AUTH)
        p = await _problem(r, 422, "validation_failed")
        assert {tuple(e["loc"][-1:]) for e in p["errors"]} == {("site",), ("description",)}
        refused.append(p["ticket_number"])
        r = await client.post("/v1/outages", json=declare_body(), headers=AUTH)
        first = await r.json()
        r = await client.post("/v1/outages", json=declare_body(serial="BR-2"), headers=AUTH)
        second = await r.json()
        assert r.status == 201 and second["id"] != first["id"]  # two servers of one contract, two outages
        r = await client.post("/v1/outages", json=declare_body(), headers=AUTH)
        p = await _problem(r, 409, "outage_already_active")
        assert p["outage_id"] == first["id"]
        refused.append(p["ticket_number"])
        numbers = [*refused[:-1], first["ticket"]["number"], second["ticket"]["number"], refused[-1]]
        seqs = [int(n.rsplit("-", 1)[1]) for n in numbers]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # unique and without a gap
        r = await client.get(f"/v1/tickets/{refused[1]}", headers=AUTH)
        ticket = await r.json()
        assert (ticket["outcome"], ticket["code"], ticket["reason"], ticket["serial"]) == (
            "refused", "not_eligible", "equipment_not_on_contract", "XX")
        r = await client.get(f"/v1/tickets/{first['ticket']['number']}", headers=AUTH)
        assert (await r.json())["outage_id"] == first["id"]
        r = await client.get("/v1/tickets", params={"contract": "SER-T-1"}, headers=AUTH)
        listed = [t["number"] for t in await r.json()]
        assert listed == [n for n in reversed(numbers) if n != refused[0]]  # newest first, that contract's
        r = await client.get("/v1/tickets/BP-1999-000001", headers=AUTH)
        await _problem(r, 404, "ticket_not_found")


async def test_intake_defaults_and_mismatches(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        assert (outage["ticket"]["company"], outage["ticket"]["model"]) == ("Cabinet Test", "RMX 1800")
        assert outage["ticket"]["mismatch"] is None
        body = contract_body("SER-T-2")
        await client.put("/v1/contracts/SER-T-2", json=body, headers=AUTH)
        ticket = {"priority": "medium", "company": "Autre SA", "model": "rmx 1800", "site": "Lyon",
                  "contact": "Mme B", "description": "no picture"}
        r = await client.post("/v1/outages", json=declare_body("SER-T-2", ticket=ticket), headers=AUTH)
        got = (await r.json())["ticket"]
        assert got["company"] == "Autre SA" and got["model"] == "rmx 1800"  # kept as given
        assert got["mismatch"] == {"company": {"given": "Autre SA", "contract": "Cabinet Test"}}  # case is not a mismatch


async def test_reported_at_is_bounded(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        now = datetime.now(UTC)
        for when in (now + timedelta(minutes=6), now - timedelta(days=8)):
            r = await client.post("/v1/outages", json=declare_body(reported_at=when.isoformat()), headers=AUTH)
            assert (await _problem(r, 422, "invalid_reported_at"))["ticket_number"]
        r = await client.post("/v1/outages", json=declare_body(reported_at=(now - timedelta(days=6)).isoformat()),
                              headers=AUTH)
        outage = await r.json()
        assert r.status == 201 and outage["restore_overdue"] is True  # reported 6 days ago: clause 4-1 is late
        r = await client.get("/metrics")
        assert "backupplus_outages_restore_overdue 1.0" in await r.text()


async def test_concurrent_declares_make_one_outage(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        rs = await asyncio.gather(*[client.post("/v1/outages", json=declare_body(), headers=AUTH) for _ in range(12)])
        assert sorted(r.status for r in rs) == [201] + [409] * 11


async def test_idempotency_key_replays_the_first_result(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        h = {**AUTH, "Idempotency-Key": "call-42"}
        rs = await asyncio.gather(*[client.post("/v1/outages", json=declare_body(), headers=h) for _ in range(4)])
        bodies = [await r.json() for r in rs]
        assert {r.status for r in rs} == {201}
        assert len({b["id"] for b in bodies}) == 1 and len({b["ticket"]["number"] for b in bodies}) == 1
        r = await client.post("/v1/outages", json=declare_body(serial="PJ-1"), headers=h)
        await _problem(r, 422, "idempotency_key_reused")
        # a refusal is replayed too, with its ticket
        h2 = {**AUTH, "Idempotency-Key": "call-43"}
        first = await _problem(await client.post("/v1/outages", json=declare_body(serial="PJ-1"), headers=h2),
                               422, "not_eligible")
        again = await _problem(await client.post("/v1/outages", json=declare_body(serial="PJ-1"), headers=h2),
                               422, "not_eligible")
        assert first["ticket_number"] == again["ticket_number"] and again["reason"] == "equipment_not_on_contract" \
            or again["reason"] == "equipment_not_videoconference"


async def test_acknowledge_once(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        r = await client.post(f"/v1/outages/{outage['id']}/acknowledge", json={"by": "Claire"}, headers=AUTH)
        acked = await r.json()
        assert acked["acknowledged_at"] and acked["acknowledged_by"] == "Claire" and acked["ack_met"] is True
        r = await client.post(f"/v1/outages/{outage['id']}/acknowledge", json={"by": "Paul"}, headers=AUTH)
        again = await r.json()
        assert (again["acknowledged_at"], again["acknowledged_by"]) == (acked["acknowledged_at"], "Claire")
        r = await client.post(f"/v1/outages/{outage['id']}/acknowledge", json={"by": " "}, headers=AUTH)
        await _problem(r, 422, "validation_failed")
        r = await client.get("/metrics")
        text = await r.text()
        assert 'backupplus_sla_deadlines_total{deadline="ack",result="met"} 1.0' in text


async def test_planned_end_set_cleared_and_reached(redis_url: str) -> None:
    async with api_client(redis_url, sweep_interval_s=0.2) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        await join(client, conf)
        url = f"/v1/outages/{outage['id']}/extend"
        r = await client.post(url, json={"window_ends_at": "2099-06-01T12:00:00+02:00"}, headers=AUTH)
        assert (await r.json())["window_ends_at"].startswith("2099-06-01T12:00:00")
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=bearer(conf["join_token"]))
        assert (await r.json())["window_ends_at"].startswith("2099-06-01")  # what the page warns about
        r = await client.post(url, json={"window_ends_at": None}, headers=AUTH)
        assert (await r.json())["window_ends_at"] is None
        r = await client.post(url, json={"window_ends_at": "2001-01-01T00:00:00+00:00"}, headers=AUTH)
        await _problem(r, 422, "invalid_window")
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        r = await client.post(url, json={"window_ends_at": soon}, headers=AUTH)
        assert r.status == 200
        for _ in range(60):
            body = await (await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)).json()
            if body["state"] == "restored":
                break
            await asyncio.sleep(0.1)
        assert (body["state"], body["end_reason"], body["in_use"]) == ("restored", "planned_end", {"audio": 0, "video": 0})
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=bearer(conf["join_token"]))
        assert (await _problem(r, 410, "outage_ended"))["reason"] == "outage_planned_end"


async def test_an_earlier_versions_expired_outage_reads_as_restored(redis_url: str, redis: aioredis.Redis) -> None:
    outage_id = "o-0000000000ee"
    doc = {"id": outage_id, "contract": "K", "serial": "S", "ticket": {"number": "BP-2025-000001", "priority": "urgent"},
           "reported_at": "2025-01-06T10:00:00+01:00", "taken_at": "2025-01-06T10:00:00+01:00",
           "ack_deadline": "2025-01-06T10:15:00+01:00", "restore_deadline": "2025-01-07T12:00:00+01:00",
           "window_ends_at": "2025-01-08T12:00:00+01:00", "capacity": {"audio": 8, "video": 10, "max_video_height": 480},
           "declared_at": "2025-01-06T10:00:00+01:00", "ended_at": "2025-01-08T12:00:00+01:00", "state": "expired"}
    await redis.hset(keys.outage_doc(outage_id), mapping={"doc": json.dumps(doc), "state": "expired"})
    await redis.zadd(keys.OUTAGES, {outage_id: 1})
    await redis.set(keys.SECRET, "e" * 64)  # that version's single secret, adopted as the key ring's root
    async with api_client(redis_url) as client:
        r = await client.get(f"/v1/outages/{outage_id}", headers=AUTH)
        body = await r.json()
        assert (body["state"], body["ended_at"], body["window_ends_at"]) == ("restored", doc["ended_at"], None)
        r = await client.get("/v1/outages", params={"state": "restored"}, headers=AUTH)
        assert [o["id"] for o in await r.json()] == [outage_id]


# --- conferences and importance --------------------------------------------------------------------------
async def test_a_more_important_conference_takes_the_ports_back(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        crowd = await new_conference(client, outage["id"], title="All hands", priority=100)
        board = await new_conference(client, outage["id"], title="Board", priority=1)
        crowd_members = [await join(client, crowd, f"c{i}", "video") for i in range(10)]
        body = await join(client, board, "CEO", "video", downgrade=False)
        assert body["kind"] == "video" and body["preempted"] is True
        latest = crowd_members[-1]
        r = await client.get(f"/v1/participants/{latest['id']}", headers=bearer(latest["participant_token"]))
        assert (await r.json())["state"] == "preempted"  # its page can still read why
        r = await client.post(f"/v1/participants/{latest['id']}/offer", json={"type": "offer", "sdp": "v=0 " * 5},
                              headers=bearer(latest["participant_token"]))
        assert (await _problem(r, 410, "participant_gone"))["state"] == "preempted"
        r = await client.post(f"/v1/conferences/{crowd['id']}/participants",
                              json={"display_name": "x", "kind": "video", "downgrade": False},
                              headers=bearer(crowd["join_token"]))
        p = await _problem(r, 409, "capacity_exhausted")  # less important: never preempts the board
        assert p["reason"] == "full"
        text = await (await client.get("/metrics")).text()
        assert 'backupplus_preemptions_total{kind="video"} 1.0' in text
        assert 'backupplus_admissions_total{kind="video",result="preempted"} 1.0' in text
        r = await client.get(f"/v1/conferences/{board['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 0, "video": 1}


async def test_patch_conference(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"], reserve={"audio": 1, "video": 2})
        for i in range(3):
            await join(client, conf, f"v{i}", "video")
        url = f"/v1/conferences/{conf['id']}"
        r = await client.patch(url, json={"priority": 2, "max": {"video": 2}, "title": "Board"}, headers=AUTH)
        body = await r.json()
        assert (body["priority"], body["max"], body["title"]) == (2, {"audio": None, "video": 2}, "Board")
        assert body["in_use"]["video"] == 3  # a lower ceiling evicts nobody
        r = await client.post(f"{url}/participants", json={"display_name": "x", "kind": "video", "downgrade": False},
                              headers=bearer(conf["join_token"]))
        assert (await _problem(r, 409, "capacity_exhausted"))["reason"] == "conference_max"
        before = {k: await redis.hgetall(k) for k in keys.ledger_keys(outage["id"])[4:8]}
        for bad in ({"max": {"video": 1}}, {"max": {"audio": 9}}, {"max": {"video": -1}}, {"priority": "high"},
                    {"priority": 1.5}, {"reserve": {"video": 11}}, {"colour": "red"}):
            r = await client.patch(url, json=bad, headers=AUTH)
            p = await _problem(r, 422, "validation_failed")
            assert p["errors"], bad
        assert {k: await redis.hgetall(k) for k in keys.ledger_keys(outage["id"])[4:8]} == before
        r = await client.patch(url, json={"max": {"video": None}}, headers=AUTH)
        assert (await r.json())["max"] == {"audio": None, "video": None}
        r = await client.patch(url, json={"priority": 1}, headers=bearer(conf["join_token"]))
        await _problem(r, 403, "forbidden")


async def test_reserves_hold_across_conferences(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        board = await new_conference(client, outage["id"], title="Board", priority=1, reserve={"audio": 0, "video": 4})
        crowd = await new_conference(client, outage["id"], title="All hands", priority=1)
        statuses = []
        for i in range(8):
            r = await client.post(f"/v1/conferences/{crowd['id']}/participants",
                                  json={"display_name": f"c{i}", "kind": "video", "downgrade": False},
                                  headers=bearer(crowd["join_token"]))
            statuses.append(r.status)
        assert statuses == [201] * 6 + [409] * 2  # 4 video ports are the board's
        for i in range(4):
            assert (await join(client, board, f"b{i}", "video"))["kind"] == "video"


async def test_conferences_come_most_important_first(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        low = await new_conference(client, outage["id"], title="Team sync", priority=3)
        top = await new_conference(client, outage["id"], title="Board", priority=1)
        mid = await new_conference(client, outage["id"], title="Clients", priority=2)
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["conferences"] == [top["id"], mid["id"], low["id"]]
        r = await client.get(f"/v1/outages/{outage['id']}/conferences", headers=AUTH)
        assert [c["title"] for c in await r.json()] == ["Board", "Clients", "Team sync"]


# --- participants ------------------------------------------------------------------------------------------
async def test_one_link_cannot_take_the_outage(redis_url: str) -> None:
    async with api_client(redis_url, admission_rate_burst=12, admission_rate_per_s=1.0) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        other = await new_conference(client, outage["id"], title="Other")
        rs = await asyncio.gather(*[
            client.post(f"/v1/conferences/{conf['id']}/participants", json={"display_name": f"x{i}", "kind": "video"},
                        headers=bearer(conf["join_token"])) for i in range(18)])
        assert sorted(r.status for r in rs) == [201] * 12 + [429] * 6
        limited = next(r for r in rs if r.status == 429)
        await _problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 2
        assert (await join(client, other, "y", "audio"))["kind"] == "audio"  # the limit is per conference
        text = await (await client.get("/metrics")).text()
        assert 'backupplus_admissions_total{kind="video",result="rate_limited"} 6.0' in text


async def test_who_may_act_on_a_participant(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        other = await new_conference(client, outage["id"], title="Other")
        mine, theirs = await join(client, conf, "me"), await join(client, conf, "them")
        elsewhere = await join(client, other, "far")
        ghost = f"{outage['id']}.p00000000"
        for pid in (mine["id"], theirs["id"]):
            for method in ("GET", "DELETE"):  # a join token sees its conference's participants, may not act
                r = await client.request(method, f"/v1/participants/{pid}", headers=bearer(conf["join_token"]))
                await _problem(r, 403, "forbidden")
        r = await client.post(f"/v1/participants/{theirs['id']}/offer", json={"type": "offer", "sdp": "v=0 " * 5},
                              headers=bearer(conf["join_token"]))
        await _problem(r, 403, "forbidden")
        # what a caller may not see at all is 404, whether it exists or not
        for pid in (elsewhere["id"], ghost):
            r = await client.get(f"/v1/participants/{pid}", headers=bearer(conf["join_token"]))
            await _problem(r, 404, "participant_not_found")
        for pid in (theirs["id"], elsewhere["id"], ghost):
            r = await client.delete(f"/v1/participants/{pid}", headers=bearer(mine["participant_token"]))
            await _problem(r, 404, "participant_not_found")
        r = await client.get(f"/v1/conferences/{other['id']}", headers=bearer(conf["join_token"]))
        await _problem(r, 404, "conference_not_found")
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=bearer(mine["participant_token"]))
        await _problem(r, 404, "conference_not_found")
        r = await client.get(f"/v1/outages/{outage['id']}", headers=bearer(conf["join_token"]))
        await _problem(r, 403, "forbidden")
        r = await client.get(f"/v1/participants/{mine['id']}", headers=bearer(mine["participant_token"]))
        assert (await r.json())["display_name"] == "me"
        r = await client.get(f"/v1/participants/{theirs['id']}", headers=AUTH)
        assert r.status == 200
        forged = mine["participant_token"][:-2] + ("AA" if not mine["participant_token"].endswith("AA") else "BB")
        r = await client.get(f"/v1/participants/{mine['id']}", headers=bearer(forged))
        await _problem(r, 401, "unauthorized")
        r = await client.get("/v1/outages", headers=bearer("jt1.forged.sig"))
        await _problem(r, 401, "unauthorized")
        r = await client.get("/v1/outages", headers={"Authorization": f"Bearer {OPERATOR}x"})
        await _problem(r, 401, "unauthorized")
        r = await client.delete(f"/v1/conferences/{conf['id']}", headers=bearer(conf["join_token"]))
        await _problem(r, 403, "forbidden")


async def test_a_retried_admission_is_the_same_participant(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        h = {**bearer(conf["join_token"]), "Idempotency-Key": "tab-1-attempt-1"}
        rs = await asyncio.gather(*[client.post(f"/v1/conferences/{conf['id']}/participants",
                                                json={"display_name": "me", "kind": "video"}, headers=h)
                                    for _ in range(3)])
        bodies = [await r.json() for r in rs]
        assert {r.status for r in rs} == {201} and len({b["id"] for b in bodies}) == 1
        assert sum(1 for r in rs if r.headers.get("Idempotent-Replayed")) == 2
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 0, "video": 1}
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "someone else", "kind": "video"}, headers=h)
        await _problem(r, 422, "idempotency_key_reused")


# --- contracts ----------------------------------------------------------------------------------------------
async def test_contracts_clause_7(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        body = contract_body("SER/2026-01", start_date="2024-03-15", term_years=3)
        r = await client.put("/v1/contracts/SER%2F2026-01", json=body, headers=AUTH)
        got = await r.json()
        assert r.status == 201 and (got["end_date"], got["renewal_notice_from"]) == ("2027-03-15", "2027-01-15")
        r = await client.get("/v1/contracts/SER/2026-01", headers=AUTH)
        assert (await r.json())["number"] == "SER/2026-01"
        for bad in ("X:active", "a b", "{x}", "+1"):
            r = await client.put(f"/v1/contracts/{bad}", json=contract_body(bad), headers=AUTH)
            await _problem(r, 422, "validation_failed")
        today = datetime.now(UTC).date()
        later = contract_body("LATER", suspended_from=(today + timedelta(days=5)).isoformat(),
                              suspension_reason="unpaid invoice")
        await client.put("/v1/contracts/LATER", json=later, headers=AUTH)
        r = await client.post("/v1/outages", json=declare_body("LATER"), headers=AUTH)
        assert r.status == 201  # not suspended yet
        now_suspended = contract_body("NOW", formal_notice_on=(today - timedelta(days=15)).isoformat())
        r = await client.put("/v1/contracts/NOW", json=now_suspended, headers=AUTH)
        assert (await r.json())["suspended_from"] == today.isoformat()  # 15 days after the notice
        r = await client.post("/v1/outages", json=declare_body("NOW"), headers=AUTH)
        assert (await _problem(r, 422, "not_eligible"))["reason"] == "contract_suspended"
        r = await client.put("/v1/contracts/EARLY", json=contract_body(
            "EARLY", formal_notice_on=today.isoformat(), suspended_from=today.isoformat()), headers=AUTH)
        await _problem(r, 422, "validation_failed")
        due = contract_body("DUE", start_date=(today - timedelta(days=330)).isoformat(), term_years=1)
        await client.put("/v1/contracts/DUE", json=due, headers=AUTH)
        r = await client.get("/v1/contracts", params={"renewal_due": "true"}, headers=AUTH)
        assert [c["number"] for c in await r.json()] == ["DUE"]


async def test_secrets_are_never_stored_nor_returned(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        r = await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        assert r.status == 201 and "hunter2" not in await r.text()
        r = await client.get("/v1/contracts/SER-T-1", headers=AUTH)
        assert "hunter2" not in await r.text() and "admin_password" not in await r.text()
        assert "hunter2" not in (await redis.get(keys.contract("SER-T-1")) or "")


# --- bad input, failures ---------------------------------------------------------------------------------------
async def test_bad_input_is_rejected_and_changes_nothing(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"], reserve={"audio": 5, "video": 0})
        before = sorted(await redis.keys("*"))
        url = f"/v1/conferences/{conf['id']}/participants"
        r = await client.post(url, data=b"{not json", headers=bearer(conf["join_token"]))
        await _problem(r, 400, "malformed_json")
        r = await client.post(url, json={"display_name": "", "kind": "hologram"}, headers=bearer(conf["join_token"]))
        p = await _problem(r, 422, "validation_failed")
        assert {tuple(e["loc"]) for e in p["errors"]} == {("display_name",), ("kind",)}
        r = await client.post(url, data=json.dumps({"display_name": "x" * 100_000, "kind": "audio"}),
                              headers=bearer(conf["join_token"]))
        await _problem(r, 413, "body_too_large")
        r = await client.post(url, json={"display_name": "x", "kind": "audio"},
                              headers={**bearer(conf["join_token"]), "Idempotency-Key": "k" * 201})
        await _problem(r, 422, "validation_failed")
        r = await client.post(f"/v1/outages/{outage['id']}/conferences",
                              json={"title": "too big", "reserve": {"audio": 4, "video": 0}}, headers=AUTH)
        await _problem(r, 409, "reserve_exceeds_capacity")
        for bad in ({"title": "x", "max": {"video": 1}, "reserve": {"video": 2}}, {"title": "x", "priority": "1"},
                    {"title": "x", "max": {"audio": 99}}):
            r = await client.post(f"/v1/outages/{outage['id']}/conferences", json=bad, headers=AUTH)
            await _problem(r, 422, "validation_failed")
        r = await client.post(f"/v1/outages/{outage['id']}/extend", json={"window_ends_at": "2099-01-01T00:00:00"},
                              headers=AUTH)
        await _problem(r, 422, "validation_failed")  # no offset
        r = await client.get("/v1/outages/o-000000000000", headers=AUTH)
        await _problem(r, 404, "outage_not_found")
        r = await client.get("/v1/participants/garbage", headers=AUTH)
        await _problem(r, 404, "participant_not_found")
        r = await client.get("/v1/nowhere", headers=AUTH)
        await _problem(r, 404, "not_found")
        assert sorted(await redis.keys("*")) == before
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 0, "video": 0}


async def test_sla_endpoint(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        r = await client.get("/v1/sla", params={"reported_at": "2026-11-27T11:59:00+01:00", "priority": "urgent"},
                             headers=AUTH)
        body = await r.json()
        assert body["taken_at"] == "2026-11-27T11:59:00+01:00"
        assert body["ack_deadline"] == "2026-11-27T12:14:00+01:00"
        assert body["restore_deadline"] == "2026-11-30T12:00:00+01:00"  # Friday -> Monday
        r = await client.get("/v1/sla", params={"reported_at": "2026-11-27T18:20:00+01:00"}, headers=AUTH)
        assert (await r.json())["ack_deadline"] == "2026-11-27T18:30:00+01:00"  # urgent never later than medium
        r = await client.get("/v1/sla", params={"reported_at": "yesterday", "priority": "whenever"}, headers=AUTH)
        p = await _problem(r, 422, "validation_failed")
        assert len(p["errors"]) == 2


async def test_redis_down_answers_503_and_recovers() -> None:
    from infra.redisproc import RedisServer

    server = RedisServer().start()
    try:
        async with api_client(server.url) as client:
            await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
            server.kill()
            r = await client.get("/v1/outages", headers=AUTH)
            assert await _problem(r, 503, "store_unavailable")
            assert (await client.get("/readyz")).status == 503
            assert (await client.get("/healthz")).status == 200
            server.start()
            for _ in range(50):
                r = await client.get("/v1/outages", headers=AUTH)
                if r.status == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status == 200
    finally:
        server.stop()


async def test_ended_says_why(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        closed = await new_conference(client, outage["id"], title="Closed")
        kept = await new_conference(client, outage["id"], title="Kept")
        r = await client.delete(f"/v1/conferences/{closed['id']}", headers=AUTH)
        assert r.status == 204
        for method, path, body in [("GET", f"/v1/conferences/{closed['id']}", None),
                                   ("POST", f"/v1/conferences/{closed['id']}/participants",
                                    {"display_name": "x", "kind": "audio"})]:
            r = await client.request(method, path, json=body, headers=bearer(closed["join_token"]))
            assert (await _problem(r, 410, "outage_ended"))["reason"] == "conference_closed"
        r = await client.post(f"/v1/conferences/{closed['id']}/participants",
                              json={"display_name": "x", "kind": "audio"}, headers=AUTH)
        await _problem(r, 404, "conference_not_found")
        await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)
        r = await client.post(f"/v1/conferences/{kept['id']}/participants",
                              json={"display_name": "x", "kind": "audio"}, headers=bearer(kept["join_token"]))
        assert (await _problem(r, 410, "outage_ended"))["reason"] == "outage_restored"


async def test_the_background_audit_repairs_a_lost_key(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url, audit_interval_s=0.2) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        for i in range(3):
            await join(client, conf, f"v{i}", "video")
        await redis.delete(keys.in_use(outage["id"]))
        for _ in range(50):
            if await redis.hget(keys.in_use(outage["id"]), "video") == "3":
                break
            await asyncio.sleep(0.1)
        assert await redis.hget(keys.in_use(outage["id"]), "video") == "3"
        text = await (await client.get("/metrics")).text()
        assert "backupplus_ledger_repairs_total 2.0" in text  # audio and video counters
        broker = client.app[BROKER]
        assert await broker.audit() == 0


async def test_a_lapsed_participant_may_still_read_itself_a_departed_one_may_not(redis_url: str) -> None:
    """The page must tell a lapsed lease (join again) from a removal (stay out): a participant whose
    lease lapsed still reads itself with its token; one that left gets 401."""
    async with api_client(redis_url, admission_lease_s=0.3, sweep_interval_s=0.2) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        lapsed, gone = await join(client, conf, "Ivy", "video"), await join(client, conf, "Max", "audio")
        r = await client.delete(f"/v1/participants/{gone['id']}", headers=bearer(gone["participant_token"]))
        assert r.status == 204
        for _ in range(50):  # the sweeper reclaims the never-offered lease
            r = await client.get(f"/v1/participants/{lapsed['id']}", headers=bearer(lapsed["participant_token"]))
            body = await r.json()
            if body.get("state") == "left":
                break
            await asyncio.sleep(0.1)
        assert r.status == 200 and (body["state"], body["state_reason"]) == ("left", "lease_expired")
        r = await client.get(f"/v1/participants/{gone['id']}", headers=bearer(gone["participant_token"]))
        assert r.status == 401
