"""Media as the source of truth after a loss (issue 14): a media node renewing a lease the ledger no
longer knows re-admits that participant when a port is free, and otherwise closes the connection
cleanly (the participant ends with a reason, never silently)."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from media.node import MediaNode
from media.routing import MediaRouter
from quotas import keys
from quotas.ledger import PortLedger
from tests.support.media_clients import Client, ToneTrack, admit, seed_conference, until

pytestmark = [pytest.mark.media, pytest.mark.timeout(60)]

# Everything the ledger knows of its participants, as a failover to a lagging replica would lose it.
PARTICIPANT_KEYS = (keys.leases, keys.lease_meta, keys.lease_order, keys.participants, keys.participant_states,
                    keys.participant_kinds, keys.participant_conferences, keys.in_use, keys.conference_use)


async def _lose_participants(redis, oid: str) -> None:  # type: ignore[no-untyped-def]
    for key in PARTICIPANT_KEYS:
        await redis.delete(key(oid))


async def test_the_ledger_converges_to_the_live_sessions(redis) -> None:  # type: ignore[no-untyped-def]
    ledger = PortLedger(redis)
    node = MediaNode(Settings(media_remote_candidates="loopback"), url="http://127.0.0.1:9")
    await node.start(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger, audio=2, video=2)
    clients = [Client(await admit(ledger, oid, cid, f"p{i}", "audio"), audio=ToneTrack(300 + 200 * i),
                      want_video=False) for i in range(2)]
    try:
        for c in clients:
            await c.connect(router.offer)
            await c.wait_connected()
        await _lose_participants(redis, oid)
        assert (await ledger.usage(oid))["in_use"]["audio"] == 0

        async def converged() -> bool:
            live = {p.id for p in await ledger.live_participants(oid)}
            return live == {c.participant["id"] for c in clients}

        took = await until(converged, 10)
        print(f"\nthe ledger knew both live sessions again {took:.1f} s after it lost them")
        assert (await ledger.usage(oid))["in_use"]["audio"] == 2
        assert all(c.pc.connectionState == "connected" for c in clients)
        states = {(await ledger.participant(oid, c.participant["id"])).state for c in clients}  # type: ignore[union-attr]
        assert states == {"connected"}
    finally:
        for c in clients:
            await c.close()
        await node.stop()
        await router.close()


async def test_a_session_that_cannot_come_back_is_closed_with_its_reason(redis) -> None:  # type: ignore[no-untyped-def]
    ledger = PortLedger(redis)
    node = MediaNode(Settings(media_remote_candidates="loopback"), url="http://127.0.0.1:9")
    await node.start(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger, audio=1, video=0)
    first = Client(await admit(ledger, oid, cid, "first", "audio"), audio=ToneTrack(440), want_video=False)
    try:
        await first.connect(router.offer)
        await first.wait_connected()
        # the loss and another participant taking the only port, in one step (the node's renewal runs
        # every 2 s and would otherwise win the port back first)
        other = f"{oid}.p0000beef"
        async with redis.pipeline(transaction=True) as pipe:
            for key in PARTICIPANT_KEYS:
                pipe.delete(key(oid))
            pipe.hset(keys.lease_meta(oid), other, f"{cid}|audio")
            pipe.zadd(keys.leases(oid), {other: 10**13})
            pipe.zadd(keys.lease_order(oid), {other: 1})
            pipe.hset(keys.participant_states(oid), other, "connected")
            await pipe.execute()
        pid = first.participant["id"]
        await until(lambda: pid not in node.sessions, 10)
        ended = await ledger.participant(oid, pid)
        assert ended is not None and (ended.state, ended.state_reason) == ("ended", "no_capacity")
        assert [p.id for p in await ledger.live_participants(oid)] == [other]
        await until(lambda: first.pc.connectionState in ("closed", "failed"), 10)
    finally:
        await first.close()
        await node.stop()
        await router.close()
