"""The whole broker on a real Redis Cluster (3 primaries, 1 replica each, started here): the /v1 API
tests and the live feed tests run unchanged on a ``redis+cluster://`` URL (declare, admit to the
caps, refuse, preempt, leave, restore, tickets, contracts, the audit repair, SSE with resume), and the
cluster's own points: outages spread over the primaries, media-node events over sharded pub/sub,
durability strict (WAIT on the slot's primary), the start-up checks on every primary."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from infra.redisconn import (
    ReplicaWait,
    StoreMisconfigured,
    StorePolicy,
    check_store,
    connect,
    is_cluster,
    parse_cluster_url,
)
from media import events
from quotas import keys

from . import test_api_events, test_api_v1, test_webhooks
from .api_helpers import api_client, bearer, join, new_conference, open_outage
from .support.brokers import AUTH as BROKER_AUTH
from .support.brokers import BrokerProcess
from .support.cluster import ClusterSetup

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# The API tests that run as they are on the cluster (every one that takes a Redis URL, except the
# one that stops a standalone Redis).
API_FLOWS: list[tuple[Any, str]] = [
    (test_api_v1, "test_declare_join_until_caps_refuse_leave_restore"),
    (test_api_v1, "test_one_active_outage_per_server_and_every_request_ticketed"),
    (test_api_v1, "test_intake_defaults_and_mismatches"),
    (test_api_v1, "test_concurrent_declares_make_one_outage"),
    (test_api_v1, "test_idempotency_key_replays_the_first_result"),
    (test_api_v1, "test_acknowledge_once"),
    (test_api_v1, "test_planned_end_set_cleared_and_reached"),
    (test_api_v1, "test_a_more_important_conference_takes_the_ports_back"),
    (test_api_v1, "test_patch_conference"),
    (test_api_v1, "test_reserves_hold_across_conferences"),
    (test_api_v1, "test_conferences_come_most_important_first"),
    (test_api_v1, "test_who_may_act_on_a_participant"),
    (test_api_v1, "test_a_retried_admission_is_the_same_participant"),
    (test_api_v1, "test_contracts_clause_7"),
    (test_api_v1, "test_sla_endpoint"),
    (test_api_v1, "test_ended_says_why"),
    (test_api_v1, "test_the_background_audit_repairs_a_lost_key"),
    (test_api_v1, "test_a_lapsed_participant_may_still_read_itself_a_departed_one_may_not"),
    (test_api_events, "test_resume_with_last_event_id_gets_exactly_the_missed_events"),
    (test_api_events, "test_one_outage_stream_resumes_from_a_stream_id"),
    (test_api_events, "test_stream_tickets_open_the_feed_and_nothing_else"),
]


# The webhook tests' receivers (aiohttp servers on loopback), for the webhook queue's tests below.
receivers = test_webhooks.receivers
WEBHOOK_FLOWS = [
    "test_events_reach_every_endpoint_once_signed",
    "test_a_receiver_down_for_a_while_gets_every_event_once",
    "test_undeliverable_events_end_in_the_dead_letter_list",
    "test_many_workers_never_deliver_one_event_twice",
    "test_a_dead_workers_lease_runs_out_and_another_delivers",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    with ClusterSetup(tmp_path_factory.mktemp("cluster"), primaries=3, replicas_each=1) as setup:
        yield setup


@pytest.fixture
async def store(cluster: ClusterSetup) -> AsyncIterator[aioredis.Redis]:
    """The broker's kind of client on the cluster (the test's own: patient timeouts), on an emptied cluster."""
    await asyncio.to_thread(cluster.flush)
    client = connect(cluster.url, decode_responses=True, policy=StorePolicy(
        command_timeout_s=2, connect_timeout_s=2, retry_budget_s=6))
    await client.initialize()  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.aclose(close_connection_pool=True)


def test_cluster_url_form() -> None:
    assert parse_cluster_url("redis+cluster://:s3cr%40t@10.0.0.1:7000,[::1]:7001/") == (
        [("10.0.0.1", 7000), ("::1", 7001)], None, "s3cr@t")
    assert parse_cluster_url("redis+cluster://bp:pw@h:1") == ([("h", 1)], "bp", "pw")
    with pytest.raises(ValueError, match="database 0"):
        parse_cluster_url("redis+cluster://h:1/3")
    with pytest.raises(ValueError, match="host:port"):
        parse_cluster_url("redis+cluster://h/")


@pytest.mark.parametrize(("module", "name"), API_FLOWS, ids=[n for _, n in API_FLOWS])
async def test_api_flow_on_the_cluster(module: Any, name: str, cluster: ClusterSetup, store: aioredis.Redis) -> None:
    flow: Callable[..., Awaitable[None]] = getattr(module, name)
    params = inspect.signature(flow).parameters
    await flow(cluster.url, *([store] if "redis" in params else []))


@pytest.mark.parametrize("name", WEBHOOK_FLOWS)
async def test_webhook_queue_on_the_cluster(name: str, cluster: ClusterSetup, store: aioredis.Redis,
                                            receivers: Any) -> None:
    """The webhook queue's scripts ({wh}: queue, deliveries, dead letters in one slot) and workers."""
    await getattr(test_webhooks, name)(cluster.url, store, receivers)


async def test_outages_land_on_several_primaries_and_the_feed_follows_them_all(
        cluster: ClusterSetup, store: aioredis.Redis) -> None:
    """Five outages (their keys on different slots and primaries): the all-outages SSE feed hands
    out every outage's decisions (one XREAD per slot), /metrics reads every outage's ports."""
    assert is_cluster(store)
    async with api_client(cluster.url, sse_block_ms=100) as client:
        outages = []
        for i in range(5):
            number = f"SER-C-{i}"
            outages.append(await open_outage(client, number))
        primaries = {store.get_node_from_key(keys.audit(o["id"])).name for o in outages}  # type: ignore[attr-defined]
        async with test_api_events.stream(client, "/v1/events") as live:
            for o in outages:
                conf = await new_conference(client, o["id"])
                await join(client, conf, f"P-{o['id']}", "video")
            got = await live.audit(10)
            assert {e.data["outage"] for e in got} == {o["id"] for o in outages}
            assert sorted(e.data["type"] for e in got) == ["admitted"] * 5 + ["conference_created"] * 5
        text = await (await client.get("/metrics")).text()
        in_use = [line for line in text.splitlines() if line.startswith("backupplus_ports_in_use{")
                  and 'kind="video"' in line and line.endswith(" 1.0")]
        assert {o["id"] for o in outages} <= {line.split('outage="')[1].split('"')[0] for line in in_use}, in_use
    print(f"\n5 outages on {len(primaries)} of 3 primaries")
    assert len(primaries) >= 2  # 5 random outage ids on one primary of three: (1/3)^4, about 1 %


async def test_media_node_events_over_sharded_pubsub(cluster: ClusterSetup, store: aioredis.Redis) -> None:
    """A media node's subscription (SSUBSCRIBE on the channel's primary) hears a leave and a
    preemption decided by the broker on the cluster, each once."""
    heard: list[dict[str, Any]] = []
    ready = asyncio.Event()
    stop = False
    listener = asyncio.create_task(events.listen(store, lambda raw: heard.append(json.loads(raw)), ready,
                                                 lambda: stop, "node-test"))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        async with api_client(cluster.url) as client:
            outage = await open_outage(client)
            crowd = await new_conference(client, outage["id"], title="All hands", priority=100)
            board = await new_conference(client, outage["id"], title="Board", priority=1)
            members = [await join(client, crowd, f"c{i}", "video", downgrade=False) for i in range(10)]
            r = await client.delete(f"/v1/participants/{members[0]['id']}",
                                    headers=bearer(members[0]["participant_token"]))
            assert r.status == 204
            await join(client, crowd, "c10", "video", downgrade=False)
            ceo = await join(client, board, "CEO", "video", downgrade=False)
            assert ceo["preempted"] is True
            for _ in range(50):
                if len(heard) >= 2:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
        assert [(e["type"], e["participant"]) for e in heard] == [
            ("participant_left", members[0]["id"]), ("participant_preempted", heard[1]["participant"])]
        assert heard[1]["outage"] == outage["id"] and heard[1]["conference"] == crowd["id"]
        assert heard[1]["participant"] not in (ceo["id"], members[0]["id"])
    finally:
        stop = True
        await asyncio.wait_for(listener, 5)


async def test_durability_strict_waits_on_the_slots_primary(cluster: ClusterSetup, store: aioredis.Redis) -> None:
    """With the write concern, a declare and an admission are on the primary's replica when answered;
    asking for more replicas than the primaries have fails at start with what to change."""
    async with api_client(cluster.url, durability="strict", durability_wait_replicas=1) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        body = await join(client, conf, "Ann", "video")
    (replica,) = cluster.replicas_of(keys.participants(outage["id"]))
    r = aioredis.Redis(port=replica.port, decode_responses=True)
    try:
        await r.execute_command("READONLY")
        assert await r.hget(keys.participants(outage["id"]), body["id"]) is not None
    finally:
        await r.aclose()
    greedy = connect(cluster.url, decode_responses=True, replica_wait=ReplicaWait(2, 100))
    try:
        with pytest.raises(StoreMisconfigured, match="primary node .* has 1 connected"):
            await check_store(greedy)
    finally:
        await greedy.aclose(close_connection_pool=True)


def test_every_script_keeps_its_keys_in_one_slot(tmp_path: Path) -> None:
    """The scripts' KEYS by construction: the ledger's under the outage's tag, the tickets' under
    {tickets}, the webhooks' under {wh} (a script given keys of two slots fails on a cluster)."""
    from redis.cluster import key_slot

    from broker.webhooks import keys as wh

    def one_slot(names: tuple[str, ...] | list[str]) -> bool:
        return len({key_slot(n.encode()) for n in names}) == 1

    assert one_slot(keys.ledger_keys("o-0123456789ab") + (keys.admission_key("o-0123456789ab", "k"),))
    assert one_slot(keys.ticket_keys("SER-1"))
    assert one_slot([wh.DUE, wh.DEAD, wh.delivery("x"), wh.throttle("y")])


def test_serve_with_its_media_node_on_the_cluster(cluster: ClusterSetup, tmp_path: Path) -> None:
    """``backupplus serve --redis-url redis+cluster://…`` with its in-process media node: the start-up
    checks pass on every primary, the node registers (pipeline over slots) and subscribes (sharded),
    and /readyz counts it ready."""
    broker = BrokerProcess(cluster.url, tmp_path / "serve.log", media=True).start(60)
    try:
        deadline = time.monotonic() + 15
        while True:
            req = urllib.request.Request(broker.base_url + "/readyz", headers=BROKER_AUTH)
            with urllib.request.urlopen(req, timeout=5) as r:
                body = json.loads(r.read())
            if body["media_nodes"]["ready"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        turn = body.pop("turn")
        assert body == {"status": "ready", "redis": "ok", "media_nodes": {"ready": 1, "draining": 0, "dead": 0}}
        assert turn is not None and "secret" not in json.dumps(turn)  # TURN off for test brokers: said, no secret
        assert "subscription" not in broker.log()  # no "events subscription lost/not ready" warning
    finally:
        broker.stop()


async def test_the_key_ring_rotates_on_the_cluster(cluster: ClusterSetup, store: aioredis.Redis) -> None:
    """``backupplus secrets rotate``'s WATCH/MULTI (one key) and the processes' reload on the cluster."""
    from quotas.secret import KeyStore, rotate

    held = await KeyStore.load(store, refresh_s=0)
    rotated = await rotate(store, grace_s=60, activation_s=0)
    assert len(rotated.roots) == 2
    assert [r.id for r in (await held.reload()).roots] == [r.id for r in rotated.roots] and held.problem is None
