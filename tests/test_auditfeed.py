"""The audit feed's reader and cursors (broker/auditfeed.py) on a real redis-server: a feed that falls
behind the hub reads again from Redis (nothing lost), and outages the hub lets go of leave the cursor
without ever being read again. The API-level resume test is tests/test_api_events.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from broker.auditfeed import AuditHub, Feed, FeedCursor, InvalidCursor, before
from quotas import keys

O1, O2 = "o-00000000000a", "o-00000000000b"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _declare(redis: aioredis.Redis, outage: str, clock: Clock) -> None:
    await redis.zadd(keys.OUTAGES, {outage: int(clock.now.timestamp() * 1000)})
    await redis.sadd(keys.ACTIVE_OUTAGES, outage)  # type: ignore[misc]
    await _event(redis, outage, "declared")


async def _event(redis: aioredis.Redis, outage: str, kind: str, **fields: str) -> str:
    return str(await redis.xadd(keys.audit(outage), {"type": kind, "at": "1", **fields}))


@pytest.fixture
async def hub(redis: aioredis.Redis) -> AsyncIterator[tuple[AuditHub, Clock]]:
    clock = Clock()
    h = AuditHub(redis, redis, clock, block_ms=50, follow_window_ms=60_000, inbox=3)
    stopping = asyncio.Event()
    task = asyncio.create_task(h.run(stopping))
    yield h, clock
    stopping.set()
    await asyncio.wait_for(task, 5)


async def _drain(feed: Feed, timeout: float = 0.5) -> list[tuple[str, str]]:
    out = []
    while (event := await feed.next(timeout)) is not None:
        out.append((event.outage, event.id))
    return out


def test_cursor_text_round_trips_and_refuses_garbage() -> None:
    cursor = FeedCursor(1700000000000, {O1: "1700000000000-3", O2: "0-0"})
    assert FeedCursor.decode(cursor.encode()) == cursor
    for bad in ("", "x;o-00000000000a@1-0", "1;nope@1-0", "1;o-00000000000a@1", "1;o-00000000000a@1-0\n"):
        with pytest.raises(InvalidCursor):
            FeedCursor.decode(bad)
    assert before("5-2") == "5-1" and before("5-0") == f"4-{2**64 - 1}" and before("0-0") == "0-0"


async def test_a_feed_that_falls_behind_reads_again_from_redis(
    redis: aioredis.Redis, hub: tuple[AuditHub, Clock]
) -> None:
    h, clock = hub
    await _declare(redis, O1, clock)
    feed = Feed(h, None, None)
    await feed.open()
    assert await _drain(feed, 0.3) == []  # a fresh feed starts at the end
    written = [await _event(redis, O1, "admitted", name=f"p{i}") for i in range(20)]
    await asyncio.sleep(0.5)  # the hub hands them out; the feed's inbox (3) overflows meanwhile
    got = await _drain(feed)
    assert got == [(O1, sid) for sid in written]  # each once, in order: read again from Redis
    assert h.subscribers == 1
    feed.close()
    assert h.subscribers == 0


async def test_outages_the_hub_lets_go_of_leave_the_cursor(
    redis: aioredis.Redis, hub: tuple[AuditHub, Clock]
) -> None:
    h, clock = hub
    await _declare(redis, O1, clock)
    await _declare(redis, O2, clock)
    feed = Feed(h, None, None, backlog=1)
    await feed.open()
    assert sorted(await _drain(feed)) == sorted([(O1, (await redis.xrange(keys.audit(O1)))[0][0]),
                                                (O2, (await redis.xrange(keys.audit(O2)))[0][0])])
    assert set(FeedCursor.decode(feed.cursor).positions) == {O1, O2}
    # O1 is restored; once it is older than the hub's window, the hub lets go of it.
    restored = await _event(redis, O1, "restored")
    await redis.srem(keys.ACTIVE_OUTAGES, O1)  # type: ignore[misc]
    assert await _drain(feed) == [(O1, restored)]
    clock.now += timedelta(minutes=5)
    await asyncio.sleep(0.3)
    later = await _event(redis, O2, "admitted", name="Ann")
    assert await _drain(feed) == [(O2, later)]
    cursor = FeedCursor.decode(feed.cursor)
    assert set(cursor.positions) == {O2} and cursor.since_ms == int(clock.now.timestamp() * 1000)
    feed.close()
    # A resume from that cursor reads nothing of O1 again, and O2 after its position.
    await _event(redis, O1, "refused", name="late")  # after the end (a join on a restored outage)
    newer = await _event(redis, O2, "left", name="Ann")
    again = Feed(h, None, cursor.encode())
    await again.open()
    assert await _drain(again) == [(O2, newer)]
    again.close()


async def _commands(redis: aioredis.Redis, *names: str) -> int:
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names)


async def test_a_hub_without_subscribers_reads_nothing_then_wakes_for_one(
    hub: tuple[AuditHub, Clock], redis: aioredis.Redis
) -> None:
    """A broker with no console open must not pay Redis reads for every decision; the first feed
    wakes the hub and misses nothing written before or after it opened."""
    h, clock = hub
    await _declare(redis, O1, clock)
    await asyncio.sleep(0.2)  # the hub settles into idle
    before_reads = await _commands(redis, "smembers", "zrangebyscore", "xread")
    for i in range(20):
        await _event(redis, O1, "admitted", n=str(i))
    await asyncio.sleep(0.5)
    assert await _commands(redis, "smembers", "zrangebyscore", "xread") == before_reads
    feed = Feed(h, O1, None, backlog=3)
    await feed.open()
    late = await _event(redis, O1, "left")
    got = await _drain(feed)
    assert [sid for _, sid in got][-1] == late and len(got) == 4  # 3 of the backlog, then the live one
    feed.close()
