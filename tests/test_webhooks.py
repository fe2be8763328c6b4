"""Webhooks against real HTTP receivers that verify Standard Webhooks signatures: every event, once,
from several broker processes; a receiver down for a while still gets each one once; one that never
answers ends in the dead-letter list; a worker that dies mid-delivery is taken over."""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from broker.webhooks import EVENT_TYPES, Webhooks, WebhookWorker
from broker.webhooks import keys as wh_keys
from broker.webhooks.worker import backoff_s
from infra.redisproc import free_port
from infra.settings import Settings

from .api_helpers import AUTH, api_client, new_conference, open_outage

pytestmark = pytest.mark.timeout(90)

SECRET = "whsec_" + base64.b64encode(b"backupplus-webhook-test-secret-32b").decode()
FAST = {  # a minute of downtime and a day of retries, scaled down for tests
    "webhook_secret": SECRET,
    "webhook_retry_base_s": 0.2,
    "webhook_retry_max_s": 0.8,
    "webhook_poll_s": 0.1,
    "webhook_timeout_s": 2.0,
}


class Receiver:
    """An aiohttp endpoint that verifies each request's signature and records what it got."""

    def __init__(self, status: int = 204, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.status, self.delay_s = status, delay_s
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.bodies: list[str] = []
        self.bad: list[str] = []
        self.attempts = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks?key=receiver-query-token"

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.text()
        try:
            payload = Webhook(SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.bad.append(str(exc))
            return web.Response(status=400)
        if self.status < 300:
            self.got.append((request.headers["webhook-id"], payload))
            self.bodies.append(body)
        await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(msg_id for msg_id, _ in self.got)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [p["data"] for _, p in self.got if p["type"] == event_type]

    async def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"got {len(self.got)} of {n} events: {self.got}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def receivers() -> Any:
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        await r.stop()


async def _join(client: Any, conf: dict[str, Any], kind: str, downgrade: bool = True) -> int:
    r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                          json={"display_name": "x", "kind": kind, "downgrade": downgrade},
                          headers={"Authorization": f"Bearer {conf['join_token']}"})
    return r.status


async def test_events_reach_every_endpoint_once_signed(redis_url: str, redis: aioredis.Redis, receivers) -> None:
    one, two = receivers(), receivers()
    await one.start()
    await two.start()
    config = {**FAST, "webhook_urls": (one.url, two.url)}
    async with api_client(redis_url, **config) as client, api_client(redis_url, **config) as other:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        for _ in range(8):
            assert await _join(other, conf, "audio") == 201
        for _ in range(3):  # three refusals within a minute: one event for audio
            assert await _join(client, conf, "audio") == 409
        for _ in range(10):
            assert await _join(client, conf, "video") == 201
        for c in (client, other):  # and one for video, whichever process refused
            assert await _join(c, conf, "video", downgrade=False) == 409
        assert (await client.post(f"/v1/outages/{outage['id']}/restore", headers=AUTH)).status == 200
        for receiver in (one, two):
            await receiver.wait_for(4)
        await asyncio.sleep(0.5)  # nothing more arrives
    for receiver in (one, two):
        assert receiver.bad == []
        assert set(receiver.counts().values()) == {1} and len(receiver.got) == 4
        (declared,) = receiver.of_type("outage.declared")
        assert declared["outage"] == outage["id"] and declared["ticket"] == outage["ticket"]["number"]
        assert declared["restore_deadline"] == outage["restore_deadline"] and "contact" not in declared
        capacity = sorted(receiver.of_type("capacity.exhausted"), key=lambda d: d["kind"])
        assert [(d["kind"], d["capacity"], d["in_use"]) for d in capacity] == [("audio", 8, 8), ("video", 10, 10)]
        assert all(d["conference"] == conf["id"] for d in capacity)
        (restored,) = receiver.of_type("outage.restored")
        assert restored["participants_released"] == 18 and restored["state"] == "restored"
        assert not any(conf["join_token"] in body for body in receiver.bodies)
    assert one.counts().keys() == two.counts().keys()  # the same webhook-id for one event everywhere
    assert await redis.zcard(wh_keys.DUE) == 0


async def test_a_receiver_down_for_a_while_gets_every_event_once(redis_url: str, redis, receivers) -> None:
    receiver = receivers()  # not listening yet: connections are refused
    config = {**FAST, "webhook_urls": (receiver.url,)}
    async with api_client(redis_url, **config) as client, api_client(redis_url, **config):
        first = await open_outage(client, "SER-W-1")
        await open_outage(client, "SER-W-2")
        await client.post(f"/v1/outages/{first['id']}/restore", headers=AUTH)
        await asyncio.sleep(3.0)  # "a minute" at these settings: several attempts each, all refused
        pending = [await redis.hgetall(wh_keys.delivery(str(d))) for d in await redis.zrange(wh_keys.DUE, 0, -1)]
        assert len(pending) == 3 and all(int(d["attempts"]) >= 3 for d in pending), pending
        assert {d["last_error"] for d in pending} == {"ClientConnectorError"}
        await receiver.start()
        await receiver.wait_for(3, timeout=10)
        await asyncio.sleep(1.5)  # longer than the longest backoff: no second copy comes
    assert receiver.bad == [] and len(receiver.got) == 3 and set(receiver.counts().values()) == {1}
    assert sorted(p["type"] for _, p in receiver.got) == ["outage.declared", "outage.declared", "outage.restored"]
    assert await redis.zcard(wh_keys.DUE) == 0 and await redis.llen(wh_keys.DEAD) == 0


async def test_undeliverable_events_end_in_the_dead_letter_list(redis_url: str, redis, receivers) -> None:
    receiver = receivers(status=503)
    await receiver.start()
    config = {**FAST, "webhook_urls": (receiver.url,), "webhook_dead_after_s": 1.0}
    async with api_client(redis_url, **config) as client:
        outage = await open_outage(client)
        deadline = time.monotonic() + 10
        while not await redis.llen(wh_keys.DEAD):
            assert time.monotonic() < deadline, "nothing reached the dead-letter list"
            await asyncio.sleep(0.05)
        attempts = receiver.attempts
        await asyncio.sleep(1.0)
        assert receiver.attempts == attempts  # no more attempts once dead
    (entry,) = [json.loads(e) for e in await redis.lrange(wh_keys.DEAD, 0, -1)]
    assert entry["type"] == "outage.declared" and entry["last_error"] == "HTTP 503"
    assert int(entry["attempts"]) == attempts >= 3 and json.loads(entry["payload"])["data"]["outage"] == outage["id"]
    assert entry["url"] == receiver.url and await redis.zcard(wh_keys.DUE) == 0


def _settings(redis_url: str, url: str, **changes: Any) -> Settings:
    return Settings.from_env(redis_url=redis_url, webhook_urls=(url,), **{**FAST, **changes})


async def test_many_workers_never_deliver_one_event_twice(redis_url: str, redis, receivers) -> None:
    receiver = receivers(delay_s=0.05)  # slow enough for the workers to overlap
    await receiver.start()
    settings = _settings(redis_url, receiver.url)
    emitter = Webhooks(redis, settings)
    workers = [WebhookWorker(redis, settings) for _ in range(4)]
    ids = [await emitter.outage_restore_overdue({"id": f"o-{i:012x}", "ticket": {"number": f"BP-{i}"}})
           for i in range(40)]
    for w in workers:
        w.start()
    try:
        await receiver.wait_for(40)
        await asyncio.sleep(0.5)
    finally:
        for w in workers:
            await w.stop()
    assert sorted(receiver.counts()) == sorted(ids) and set(receiver.counts().values()) == {1}


async def test_a_dead_workers_lease_runs_out_and_another_delivers(redis_url: str, redis, receivers) -> None:
    receiver = receivers()
    await receiver.start()
    settings = _settings(redis_url, receiver.url, webhook_timeout_s=0.3)  # lease: 2 x 0.3 + 1 = 1.6 s
    emitter = Webhooks(redis, settings)
    msg_id = await emitter.participant_preempted("o-0123456789ab", "o-0123456789ab.c00000001",
                                                 "o-0123456789ab.p00000001", "video", "o-0123456789ab.c00000002")
    assert msg_id is not None
    crashed = WebhookWorker(redis, settings)  # takes the delivery, then never comes back
    taken = await crashed._scripts.call("lease", [wh_keys.DUE, wh_keys.delivery(f"{msg_id}.1")],
                                        [f"{msg_id}.1", int(time.time() * 1000), int(time.time() * 1000) + 1600,
                                         crashed.token])
    assert taken
    survivor = WebhookWorker(redis, settings)
    survivor.start()
    started = time.monotonic()
    try:
        await receiver.wait_for(1, timeout=10)
    finally:
        await survivor.stop()
    assert 1.0 < time.monotonic() - started < 5  # not before the lease ran out
    assert receiver.got[0][0] == msg_id and receiver.got[0][1]["type"] == "participant.preempted"
    late = await crashed._scripts.call("settle", [wh_keys.DUE, wh_keys.delivery(f"{msg_id}.1"), wh_keys.DEAD],
                                       [f"{msg_id}.1", crashed.token, "retry", 0, "late", 0, 10])
    assert late == 0  # the crashed worker's late word changes nothing


async def test_hooks_for_the_lead_emit_their_events(redis_url: str, redis, receivers) -> None:
    receiver = receivers()
    await receiver.start()
    settings = _settings(redis_url, receiver.url)
    emitter = Webhooks(redis, settings)
    outage = {"id": "o-0123456789ab", "ticket": {"number": "BP-2026-000007", "priority": "urgent"},
              "acknowledged_at": "2026-03-02T10:05:00+01:00", "ack_met": True}
    await emitter.outage_acknowledged(outage)
    await emitter.outage_restore_overdue(outage)
    await emitter.participant_preempted("o-0123456789ab", "o-0123456789ab.c00000001", "o-0123456789ab.p00000001",
                                        "video", "o-0123456789ab.c00000002")
    worker = WebhookWorker(redis, settings)
    worker.start()
    try:
        await receiver.wait_for(3)
    finally:
        await worker.stop()
    by_type = {p["type"]: p["data"] for _, p in receiver.got}
    assert by_type["outage.acknowledged"]["ack_met"] is True
    assert by_type["outage.restore_overdue"]["ticket"] == "BP-2026-000007"
    assert by_type["participant.preempted"]["by_conference"] == "o-0123456789ab.c00000002"
    assert set(by_type) | {"outage.declared", "outage.restored", "capacity.exhausted"} == set(EVENT_TYPES)


async def test_without_urls_nothing_is_queued(redis_url: str, redis) -> None:
    async with api_client(redis_url) as client:
        await open_outage(client)
    assert await Webhooks(redis, Settings(redis_url=redis_url)).emit("outage.declared", {}) is None
    assert [k async for k in redis.scan_iter("bp:{wh}:*")] == []


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    assert [backoff_s(n, 5, 3600, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_s(20, 5, 3600, rand=lambda: 1.0) == 3600
    assert backoff_s(3, 5, 3600, rand=lambda: 0.0) == 10  # never below half


def test_settings_refuse_a_url_without_a_secret_or_a_weak_secret() -> None:
    with pytest.raises(ValueError, match="needs --webhook-secret"):
        Settings(webhook_urls=("http://127.0.0.1:1/x",))
    with pytest.raises(ValueError, match="whsec_"):
        Settings(webhook_urls=("http://127.0.0.1:1/x",), webhook_secret="whsec_c2hvcnQ=")
    assert Settings.from_env(webhook_urls="http://a.example/x, https://b.example/y",
                             webhook_secret=SECRET).webhook_urls == ("http://a.example/x", "https://b.example/y")
