"""The /v1 API end to end against a real Redis: the paths, fields, statuses and codes of API.md."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from quotas import keys

from .api_helpers import AUTH, OPERATOR, api_client, contract_body, declare_body, new_conference, open_outage


@pytest.fixture(autouse=True)
async def _fresh_redis(redis: aioredis.Redis) -> None:
    """Every test starts from an empty store (the fixture flushes it)."""


def _join(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _problem(r, status: int, code: str) -> dict:
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == code and body["status"] == status and body["title"] and body["detail"]
    return dict(body)


async def test_declare_join_until_caps_refuse_leave_restore(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        assert outage["state"] == "active"
        assert outage["capacity"] == {"audio": 8, "video": 10, "max_video_height": 480}
        assert outage["in_use"] == {"audio": 0, "video": 0}
        assert outage["ticket"]["number"].startswith("BP-") and outage["ticket"]["priority"] == "urgent"
        for field in ("reported_at", "taken_at", "ack_deadline", "restore_deadline", "window_ends_at"):
            assert "+" in outage[field][19:] or outage[field].endswith("Z"), field
        conf = await new_conference(client, outage["id"])
        assert conf["join_url"].endswith("/join/" + conf["join_token"])
        token = conf["join_token"]
        granted = []
        for i in range(10):
            r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                                  json={"display_name": f"V{i}", "kind": "video"}, headers=_join(token))
            assert r.status == 201, await r.text()
            body = await r.json()
            assert body["kind"] == "video" and body["lease_expires_at"]
            granted.append(body["id"])
        # Video full: downgraded to audio by default, refused when downgrade is false.
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "late", "kind": "video", "downgrade": False}, headers=_join(token))
        p = await _problem(r, 409, "capacity_exhausted")
        assert (p["kind"], p["capacity"], p["in_use"]) == ("video", 10, 10)
        assert int(r.headers["Retry-After"]) > 0
        for i in range(8):
            r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                                  json={"display_name": f"A{i}", "kind": "video"}, headers=_join(token))
            assert r.status == 201
            body = await r.json()
            assert body["kind"] == "audio" and body["downgraded"] is True
            granted.append(body["id"])
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "nope", "kind": "audio"}, headers=_join(token))
        p = await _problem(r, 409, "capacity_exhausted")
        assert (p["kind"], p["capacity"], p["in_use"]) == ("audio", 8, 8)
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 8, "video": 10}
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=_join(token))
        assert len((await r.json())["participants"]) == 18
        # Leave frees the port at once; a second DELETE is harmless.
        r = await client.delete(f"/v1/participants/{granted[0]}", headers=_join(token))
        assert r.status == 204
        r = await client.delete(f"/v1/participants/{granted[0]}", headers=_join(token))
        assert r.status == 204
        r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
        assert (await r.json())["in_use"] == {"audio": 8, "video": 9}
        # Restore: every port released, the join token useless, state restored.
        r = await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)
        assert r.status == 200
        restored = await r.json()
        assert restored["state"] == "restored" and restored["in_use"] == {"audio": 0, "video": 0}
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "after", "kind": "audio"}, headers=_join(token))
        await _problem(r, 410, "outage_ended")
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=_join(token))
        await _problem(r, 410, "outage_ended")
        r = await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)
        await _problem(r, 409, "outage_not_active")
        assert await redis.zcard(keys.leases(outage["id"])) == 0
        # The contract may have a new outage now.
        r = await client.post("/v1/outages", json=declare_body(), headers=AUTH)
        assert r.status == 201


async def test_eligibility_errors_and_one_active_outage(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        r = await client.post("/v1/outages", json=declare_body("NOPE"), headers=AUTH)
        await _problem(r, 404, "contract_not_found")
        await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        for serial, reason in [("XX", "equipment_not_on_contract"), ("PJ-1", "equipment_not_videoconference"),
                               ("EP-OLD", "warranty_expired")]:
            r = await client.post("/v1/outages", json=declare_body(serial=serial), headers=AUTH)
            assert (await _problem(r, 422, "not_eligible"))["reason"] == reason
        await client.put("/v1/contracts/SUS", json=contract_body("SUS", status="suspended"), headers=AUTH)
        r = await client.post("/v1/outages", json=declare_body("SUS"), headers=AUTH)
        assert (await _problem(r, 422, "not_eligible"))["reason"] == "contract_suspended"
        r = await client.post("/v1/outages", json=declare_body(), headers=AUTH)
        first = await r.json()
        r = await client.post("/v1/outages", json=declare_body(), headers=AUTH)
        assert (await _problem(r, 409, "outage_already_active"))["outage_id"] == first["id"]


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
        assert len({b["id"] for b in bodies}) == 1
        r = await client.post("/v1/outages", json=declare_body(serial="PJ-1"), headers=h)
        await _problem(r, 422, "idempotency_key_reused")


async def test_secrets_are_never_stored_nor_returned(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        r = await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        assert r.status == 201
        assert "hunter2" not in await r.text()
        r = await client.put("/v1/contracts/SER-T-1", json=contract_body(), headers=AUTH)
        assert r.status == 200
        r = await client.get("/v1/contracts/SER-T-1", headers=AUTH)
        assert "hunter2" not in await r.text() and "admin_password" not in await r.text()
        assert "hunter2" not in (await redis.get(keys.contract("SER-T-1")) or "")


async def test_auth_rules(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        other = await new_conference(client, outage["id"], title="Other")
        r = await client.get("/v1/outages")
        assert (await _problem(r, 401, "unauthorized")) and r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await client.get("/v1/outages", headers=_join("jt1.forged.sig"))
        await _problem(r, 401, "unauthorized")
        tampered = conf["join_token"][:-2] + ("AA" if not conf["join_token"].endswith("AA") else "BB")
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=_join(tampered))
        await _problem(r, 401, "unauthorized")
        # A join token reads its own conference, nothing else.
        r = await client.get(f"/v1/outages/{outage['id']}", headers=_join(conf["join_token"]))
        await _problem(r, 403, "forbidden")
        r = await client.get(f"/v1/conferences/{other['id']}", headers=_join(conf["join_token"]))
        await _problem(r, 403, "forbidden")
        r = await client.post(f"/v1/conferences/{other['id']}/participants",
                              json={"display_name": "x", "kind": "audio"}, headers=_join(conf["join_token"]))
        await _problem(r, 403, "forbidden")
        r = await client.post(f"/v1/conferences/{other['id']}/participants",
                              json={"display_name": "x", "kind": "audio"}, headers=_join(other["join_token"]))
        pid = (await r.json())["id"]
        r = await client.delete(f"/v1/participants/{pid}", headers=_join(conf["join_token"]))
        await _problem(r, 403, "forbidden")
        r = await client.delete(f"/v1/conferences/{conf['id']}", headers=_join(conf["join_token"]))
        await _problem(r, 403, "forbidden")


async def test_bad_input_is_rejected_and_changes_nothing(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        before = sorted(await redis.keys("*"))
        url = f"/v1/conferences/{conf['id']}/participants"
        r = await client.post(url, data=b"{not json", headers=_join(conf["join_token"]))
        await _problem(r, 400, "malformed_json")
        r = await client.post(url, json={"display_name": "", "kind": "hologram"}, headers=_join(conf["join_token"]))
        p = await _problem(r, 422, "validation_failed")
        assert {tuple(e["loc"]) for e in p["errors"]} == {("display_name",), ("kind",)}
        r = await client.post(url, data=json.dumps({"display_name": "x" * 100_000, "kind": "audio"}),
                              headers=_join(conf["join_token"]))
        await _problem(r, 413, "body_too_large")
        r = await client.post(f"/v1/outages/{outage['id']}/conferences",
                              json={"title": "too big", "reserve": {"audio": 9, "video": 0}}, headers=AUTH)
        await _problem(r, 409, "reserve_exceeds_capacity")
        r = await client.post("/v1/outages", json={"contract": "SER-T-1"}, headers=AUTH)
        await _problem(r, 422, "validation_failed")
        r = await client.post(f"/v1/outages/{outage['id']}/extend", json={"window_ends_at": "2001-01-01T00:00:00+00:00"},
                              headers=AUTH)
        await _problem(r, 422, "invalid_window")
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


async def test_reserves_hold_across_conferences(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        board = await new_conference(client, outage["id"], title="Board", priority=1, reserve={"audio": 0, "video": 4})
        crowd = await new_conference(client, outage["id"], title="All hands", priority=2)
        kinds = []
        for i in range(8):
            r = await client.post(f"/v1/conferences/{crowd['id']}/participants",
                                  json={"display_name": f"c{i}", "kind": "video", "downgrade": False},
                                  headers=_join(crowd["join_token"]))
            kinds.append(r.status)
        assert kinds == [201] * 6 + [409] * 2  # 4 video ports are the board's
        for i in range(4):
            r = await client.post(f"/v1/conferences/{board['id']}/participants",
                                  json={"display_name": f"b{i}", "kind": "video"}, headers=_join(board["join_token"]))
            assert r.status == 201 and (await r.json())["kind"] == "video"


async def test_extend_moves_the_window_and_expiry_ends_the_outage(redis_url: str) -> None:
    async with api_client(redis_url, sweep_interval_s=0.2) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "a", "kind": "audio"}, headers=_join(conf["join_token"]))
        assert r.status == 201
        r = await client.post(f"/v1/outages/{outage['id']}/extend", json={"window_ends_at": "2099-06-01T12:00:00+02:00"},
                              headers=AUTH)
        assert r.status == 200 and (await r.json())["window_ends_at"].startswith("2099-06-01T12:00:00")
        # Pull the window into the past through the ledger (the API refuses a past end) and wait for expiry.
        broker = client.app[__import__("api.appkeys", fromlist=["BROKER"]).BROKER]
        await broker.ledger.update_doc(outage["id"], {"window_ends_at": "2000-01-01T00:00:00+00:00"})
        for _ in range(50):
            r = await client.get(f"/v1/outages/{outage['id']}", headers=AUTH)
            if (await r.json())["state"] == "expired":
                break
            await asyncio.sleep(0.1)
        body = await r.json()
        assert body["state"] == "expired" and body["in_use"] == {"audio": 0, "video": 0}


async def test_sla_endpoint(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        r = await client.get("/v1/sla", params={"reported_at": "2026-11-27T11:59:00+01:00", "priority": "urgent"},
                             headers=AUTH)
        body = await r.json()
        assert body["taken_at"] == "2026-11-27T11:59:00+01:00"
        assert body["ack_deadline"] == "2026-11-27T12:14:00+01:00"
        assert body["restore_deadline"] == "2026-11-30T12:00:00+01:00"  # Friday -> Monday
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
            assert (await _problem(r, 503, "store_unavailable"))
            r = await client.get("/readyz")
            assert r.status == 503
            r = await client.get("/healthz")
            assert r.status == 200
            server.start()
            for _ in range(50):
                r = await client.get("/v1/outages", headers=AUTH)
                if r.status == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status == 200
    finally:
        server.stop()


async def test_operator_token_is_not_a_join_token(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        r = await client.get("/v1/outages", headers={"Authorization": f"Bearer {OPERATOR}x"})
        await _problem(r, 401, "unauthorized")


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
            r = await client.request(method, path, json=body, headers=_join(closed["join_token"]))
            assert (await _problem(r, 410, "outage_ended"))["reason"] == "conference_closed"
        r = await client.post(f"/v1/conferences/{closed['id']}/participants",
                              json={"display_name": "x", "kind": "audio"}, headers=AUTH)
        await _problem(r, 404, "conference_not_found")
        await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)
        r = await client.post(f"/v1/conferences/{kept['id']}/participants",
                              json={"display_name": "x", "kind": "audio"}, headers=_join(kept["join_token"]))
        assert (await _problem(r, 410, "outage_ended"))["reason"] == "outage_restored"


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
