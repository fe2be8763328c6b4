"""The live audit feed over server-sent events (api/livefeed.py, broker/auditfeed.py) against a real
Redis: resume with Last-Event-ID gets exactly the missed events (none lost, none twice), new and
ended outages included; stream tickets; the per-process cap; heartbeats; shutdown closes streams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from quotas import keys

from .api_helpers import (
    AUTH,
    api_client,
    bearer,
    contract_body,
    declare_body,
    join,
    new_conference,
    open_outage,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
async def _fresh_redis(redis: aioredis.Redis) -> None:
    """Every test starts from an empty store."""


@dataclass
class Sse:
    event: str
    id: str | None
    data: Any


class SseReader:
    """A minimal server-sent events parser over an aiohttp response (comments kept, for heartbeats)."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []
        self.last_id: str | None = None

    async def next(self, timeout: float = 5.0) -> Sse | None:
        fields: dict[str, str] = {}
        data: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                raw = await asyncio.wait_for(self.resp.content.readline(), left)
            except TimeoutError:
                return None
            if not raw:
                return None  # the server closed the stream
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if not data and not fields:
                    continue
                if "id" in fields:
                    self.last_id = fields["id"]
                return Sse(fields.get("event", "message"), fields.get("id"), json.loads("\n".join(data) or "null"))
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value

    async def audit(self, n: int, timeout: float = 10.0) -> list[Sse]:
        out: list[Sse] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            ev = await self.next(max(0.05, deadline - time.monotonic()))
            assert ev is not None, f"got {len(out)} of {n} events: {[(e.data['type'], e.id) for e in out]}"
            if ev.event == "audit":
                out.append(ev)
        return out

    async def quiet(self, seconds: float) -> list[Sse]:
        """What else comes within ``seconds`` (audit events only)."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ev = await self.next(left)
            if ev is None:
                break
            if ev.event == "audit":
                out.append(ev)
        return out


@asynccontextmanager
async def stream(client: TestClient, path: str, headers: dict[str, str] | None = None) -> AsyncIterator[SseReader]:
    resp = await client.get(path, headers={**AUTH, **(headers or {})})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    reader = SseReader(resp)
    ready = await reader.next()
    assert ready is not None and ready.event == "ready" and ready.id, ready
    try:
        yield reader
    finally:
        resp.close()


async def _trail(redis: aioredis.Redis, outage: str, after: str | None) -> list[tuple[str, str]]:
    start = "-" if after is None else f"({after}"
    return [(outage, i) for i, _ in await redis.xrange(keys.audit(outage), start, "+")]


async def _second_contract(client: TestClient, number: str) -> str:
    r = await client.put(f"/v1/contracts/{number}", json=contract_body(number), headers=AUTH)
    assert r.status in (200, 201)
    return number


async def _declare(client: TestClient, number: str) -> dict[str, Any]:
    r = await client.post("/v1/outages", json=declare_body(number), headers=AUTH)
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def test_resume_with_last_event_id_gets_exactly_the_missed_events(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url, sse_block_ms=100) as client:
        a = await open_outage(client)
        conf = await new_conference(client, a["id"])
        async with stream(client, "/v1/events") as live:
            await join(client, conf, "Ann", "video")
            await join(client, conf, "Bob", "audio")
            got = await live.audit(2)
            assert [(e.data["type"], e.data["name"]) for e in got] == [("admitted", "Ann"), ("admitted", "Bob")]
            assert all(e.data["outage"] == a["id"] and e.data["at_iso"] for e in got)
            resume_from = live.last_id
            seen_a = got[-1].data["id"]
        assert resume_from is not None
        # While the console is away: more in A, a new outage B with its decisions, and an outage C
        # declared and restored entirely.
        await join(client, conf, "Cleo", "video")
        r = await client.post(f"/v1/outages/{a['id']}/acknowledge", json={"by": "Claire"}, headers=AUTH)
        assert r.status == 200
        b = await _declare(client, await _second_contract(client, "SER-T-2"))
        conf_b = await new_conference(client, b["id"], priority=1)
        await join(client, conf_b, "Dan", "video")
        c = await _declare(client, await _second_contract(client, "SER-T-3"))
        r = await client.post(f"/v1/outages/{c['id']}/restore", headers=AUTH)
        assert r.status == 200
        expected = (await _trail(redis, a["id"], seen_a) + await _trail(redis, b["id"], None)
                    + await _trail(redis, c["id"], None))
        assert len(expected) == 7  # A: Cleo, acknowledged; B: declared, conference, Dan; C: declared, restored
        async with stream(client, "/v1/events", {"Last-Event-ID": resume_from}) as again:
            missed = await again.audit(len(expected))
            extra = await again.quiet(1.0)
            assert extra == [], [(e.data["type"], e.id) for e in extra]
            got_ids = [(e.data["outage"], e.data["id"]) for e in missed]
            assert sorted(got_ids) == sorted(expected)  # exactly the missed ones: none lost, none twice
            for outage in (a["id"], b["id"], c["id"]):  # each outage's in its own order
                assert [i for o, i in got_ids if o == outage] == [i for o, i in expected if o == outage]
            types = [e.data["type"] for e in missed]
            assert {"admitted", "acknowledged", "declared", "conference_created", "restored"} <= set(types)
            # ... and on live from there, once each.
            await join(client, conf, "Eve", "audio")
            (eve,) = await again.audit(1)
            assert eve.data["name"] == "Eve" and await again.quiet(0.5) == []
            last = again.last_id
        # The same cursor given in the query (a client that reconnects with a fresh stream ticket).
        await join(client, conf_b, "Finn", "audio")
        async with stream(client, f"/v1/events?last_event_id={last}") as third:
            (finn,) = await third.audit(1)
            assert finn.data["name"] == "Finn" and await third.quiet(0.5) == []


async def test_one_outage_stream_resumes_from_a_stream_id(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url, sse_block_ms=100) as client:
        a = await open_outage(client)
        b = await _declare(client, await _second_contract(client, "SER-T-2"))
        conf = await new_conference(client, a["id"])
        conf_b = await new_conference(client, b["id"])
        path = f"/v1/outages/{a['id']}/events?stream=1"
        async with stream(client, path + "&backlog=2") as live:
            backlog = await live.audit(2)  # the last two decisions first: declared, conference_created
            assert [e.data["type"] for e in backlog] == ["declared", "conference_created"]
            await join(client, conf_b, "Other", "video")  # another outage: not in this stream
            await join(client, conf, "Ann", "video")
            (ann,) = await live.audit(1)
            assert ann.data["name"] == "Ann" and ann.id == ann.data["id"]
        await join(client, conf, "Bob", "video")
        await join(client, conf, "Cleo", "video")
        expected = await _trail(redis, a["id"], ann.id)
        async with stream(client, path, {"Last-Event-ID": ann.id}) as again:
            missed = await again.audit(len(expected))
            assert [(e.data["outage"], e.id) for e in missed] == expected
            assert [e.data["name"] for e in missed] == ["Bob", "Cleo"]
            assert await again.quiet(0.5) == []
        r = await client.get(f"/v1/outages/{a['id']}/events?stream=1", headers={**AUTH, "Last-Event-ID": "nope"})
        assert r.status == 422 and (await r.json())["code"] == "validation_failed"
        r = await client.get("/v1/outages/o-000000000000/events?stream=1", headers=AUTH)
        assert r.status == 404 and (await r.json())["code"] == "outage_not_found"


async def test_stream_tickets_open_the_feed_and_nothing_else(redis_url: str) -> None:
    async with api_client(redis_url, sse_ticket_ttl_s=1.0) as client:
        a = await open_outage(client)
        conf = await new_conference(client, a["id"])
        r = await client.post("/v1/events/tickets", headers=AUTH)
        assert r.status == 201
        body = await r.json()
        ticket = body["ticket"]
        assert ticket.startswith("st1.") and body["events_url"].endswith("/v1/events") and body["expires_at"]
        resp = await client.get(f"/v1/events?ticket={ticket}")  # no Authorization header: the ticket
        assert resp.status == 200
        reader = SseReader(resp)
        assert (await reader.next()).event == "ready"  # type: ignore[union-attr]
        await join(client, conf, "Ann", "video")
        (ann,) = await reader.audit(1)
        assert ann.data["name"] == "Ann"
        resp.close()
        # The ticket is not a bearer token anywhere else.
        r = await client.get("/v1/outages", headers=bearer(ticket))
        assert r.status == 401
        # Refused: the operator token itself in the URL, a forged ticket, a join token, an expired ticket.
        for query in ("ticket=bpo_test-operator-token-0123456789abcdef", "ticket=st1.AAAA.BBBB", f"ticket={ticket}x"):
            r = await client.get(f"/v1/events?{query}")
            assert r.status == 401 and (await r.json())["code"] == "unauthorized", query
        r = await client.get("/v1/events", headers=bearer(conf["join_token"]))
        assert r.status == 403
        r = await client.post("/v1/events/tickets", headers=bearer(conf["join_token"]))
        assert r.status == 403
        await asyncio.sleep(1.1)
        r = await client.get(f"/v1/events?ticket={ticket}")
        assert r.status == 401


async def test_cap_heartbeat_lifetime_and_shutdown(redis_url: str) -> None:
    async with api_client(redis_url, sse_max_streams=1, sse_heartbeat_s=0.2, sse_max_lifetime_s=1.5) as client:
        await open_outage(client)
        async with stream(client, "/v1/events") as first:
            r = await client.get("/v1/events", headers=AUTH)
            assert r.status == 503 and (await r.json())["code"] == "too_many_streams"
            assert int(r.headers["Retry-After"]) > 0
            await first.quiet(0.6)
            assert ": ping" in first.comments  # heartbeats
            end = await first.next(3.0)
            assert end is not None and end.event == "close" and end.data == {"reason": "lifetime"}
        # The slot is free again once a stream ended, or its client went away (seen within a moment).
        async with stream(client, "/v1/events"):
            pass
        deadline = time.monotonic() + 3
        while (resp := await client.get("/v1/events", headers=AUTH)).status == 503:
            assert time.monotonic() < deadline, "the slot of a closed stream was not given back"
            await asyncio.sleep(0.05)
        assert resp.status == 200
        reader = SseReader(resp)
        assert (await reader.next()).event == "ready"  # type: ignore[union-attr]
        started = time.monotonic()
        closing = asyncio.create_task(client.server.close())  # the app stops: streams say so and end
        end = await reader.next(5.0)
        assert end is not None and end.event == "close" and end.data == {"reason": "shutdown"}
        await asyncio.wait_for(closing, 10)
        assert time.monotonic() - started < 5
