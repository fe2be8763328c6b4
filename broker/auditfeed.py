"""The live audit feed: the outages' audit streams (``quotas.keys.audit``) read as one feed, for the
console's server-sent events.

One ``AuditHub`` per broker process reads the streams of the outages it follows (the active ones and
those declared within ``follow_window_ms``) with one ``XREAD BLOCK`` of bounded length, picks up new
outages at every turn, and hands each event to the subscribed feeds. A ``Feed`` (one per client
connection) first catches up from Redis after its cursor, then takes the hub's events and skips what
it already sent: nothing is lost between the two and nothing comes twice.

Cursors: a one-outage feed resumes after a stream id. The all-outages feed resumes after a
``FeedCursor``: the last id sent of each outage it follows, and ``since`` (a hub scan time) that
tells which outages it never sent anything of (declared since, or still active: read from their start).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis

from infra.redisconn import STORE_UNAVAILABLE, is_cluster
from infra.text import as_str
from quotas import keys

from . import ids

log = logging.getLogger("backupplus.auditfeed")

Clock = Callable[[], datetime]
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_CURSOR = re.compile(r"\d{1,20}(;o-[0-9a-f]{12}@\d{1,20}-\d{1,20})*")
_MAX_SEQ = 2**64 - 1
PAGE = 200  # events read at once by a feed catching up
MAX_CURSOR_OUTAGES = 1000
MAX_CURSOR_CHARS = 64_000


class InvalidCursor(ValueError):
    """A Last-Event-ID that is not one of ours."""


def stream_key(sid: str) -> tuple[int, int]:
    m = _STREAM_ID.fullmatch(sid)
    if not m:
        raise InvalidCursor(f"not a stream id: {sid!r}")
    return int(m.group(1)), int(m.group(2))


def is_stream_id(sid: str) -> bool:
    return bool(_STREAM_ID.fullmatch(sid))


def before(sid: str) -> str:
    """The stream id just before ``sid`` (an exclusive start that includes ``sid``)."""
    ms, seq = stream_key(sid)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"


@dataclass(frozen=True)
class AuditEvent:
    """One decision: the outage, its stream id and the fields the deciding script wrote."""

    outage: str
    id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class Dropped:
    """The hub stopped following ``outage`` (ended, and declared before ``scan_ms`` - window) after
    handing out its last events; sent in order behind them."""

    outage: str
    scan_ms: int


@dataclass
class FeedCursor:
    """Where an all-outages feed is: ``since`` (ms) and the last id sent per outage.
    Text form: ``<since>;<outage>@<id>;…`` (no character an SSE id may not hold)."""

    since_ms: int
    positions: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        return ";".join([str(self.since_ms), *(f"{o}@{sid}" for o, sid in sorted(self.positions.items()))])

    @classmethod
    def decode(cls, text: str) -> FeedCursor:
        if len(text) > MAX_CURSOR_CHARS or not _CURSOR.fullmatch(text):
            raise InvalidCursor("not a feed cursor")
        head, *items = text.split(";")
        if not head.isdigit() or len(head) > 20 or len(items) > MAX_CURSOR_OUTAGES:
            raise InvalidCursor("not a feed cursor")
        positions = {}
        for item in items:
            outage, _, sid = item.partition("@")
            if not ids.is_outage_id(outage) or not is_stream_id(sid):
                raise InvalidCursor(f"not a feed cursor entry: {item!r}")
            positions[outage] = sid
        return cls(int(head), positions)


class Subscription:
    """A feed's inbox at the hub; ``overflowed`` once it fell more than ``maxsize`` behind."""

    def __init__(self, outage: str | None, maxsize: int) -> None:
        self.outage = outage
        self.queue: asyncio.Queue[AuditEvent | Dropped] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, item: AuditEvent | Dropped) -> None:
        if self.overflowed or (self.outage is not None and item.outage != self.outage):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


def _entries(raw: object) -> list[tuple[str, dict[str, str]]]:
    return [(as_str(i), {as_str(k): as_str(v) for k, v in (f or {}).items()}) for i, f in (raw or [])]  # type: ignore[attr-defined]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class AuditHub:
    """Reads the followed outages' audit streams for every feed of this process.

    ``store`` answers the short reads; ``reader`` is a connection of its own for the blocking XREAD
    (its socket timeout must exceed ``block_ms``). ``run`` loops until ``stopping`` is set; each turn
    waits at most ``block_ms``.

    On a Redis Cluster one XREAD may only name streams of one slot, and the outages' streams lie on
    many: each turn sends one XREAD per slot without BLOCK, all in one pipeline (one round trip per
    primary), and waits ``cluster_poll_ms`` when none had anything new.
    """

    def __init__(
        self, store: aioredis.Redis, reader: aioredis.Redis, clock: Clock, *, block_ms: int = 500,
        follow_window_ms: int = 120_000, batch: int = 500, inbox: int = 5000, cluster_poll_ms: int = 100,
    ) -> None:
        self.store = store
        self.reader = reader
        self.clock = clock
        self.block_ms = block_ms
        self.follow_window_ms = follow_window_ms
        self.batch = batch
        self.inbox = inbox
        self.cluster_poll_ms = cluster_poll_ms
        self.following: dict[str, str] = {}  # outage -> last id read
        self.wanted: frozenset[str] = frozenset()
        self.scan_ms = 0  # clock of the last scan (0: none yet)
        self.scanned = asyncio.Event()
        self._subs: set[Subscription] = set()
        self._idle = False  # no subscriber: nothing read from Redis until one comes
        self._wake = asyncio.Event()

    # --- subscribers ---------------------------------------------------------------------------
    def subscribe(self, outage: str | None = None) -> Subscription:
        """A new subscription. An idle hub wakes and follows the outages from their tails again:
        ``scanned`` is cleared until that scan is done (a feed opens after it, so it catches up on
        everything before it from Redis and takes everything after it from the hub)."""
        sub = Subscription(outage, self.inbox)
        self._subs.add(sub)
        if self._idle:
            self._idle = False
            self.scanned.clear()
            self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _dispatch(self, item: AuditEvent | Dropped) -> None:
        for sub in list(self._subs):
            sub.offer(item)

    # --- what to follow ------------------------------------------------------------------------
    async def candidates(self, since_ms: int) -> tuple[set[str], dict[str, int]]:
        """(active outages, {outage: declared ms} of those declared from ``since_ms`` - window)."""
        async with self.store.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.ACTIVE_OUTAGES)
            pipe.zrangebyscore(keys.OUTAGES, since_ms - self.follow_window_ms, "+inf", withscores=True)
            active, recent = await pipe.execute()
        return {as_str(o) for o in active}, {as_str(o): int(s) for o, s in recent}

    async def tail(self, outage: str) -> str:
        last = await self.store.xrevrange(keys.audit(outage), "+", "-", count=1)
        return as_str(last[0][0]) if last else "0-0"

    async def scan(self, *, initial: bool = False) -> None:
        """Follows new outages (from their start; at the hub's start from their tail: the feeds catch
        up on what came before) and lets go of the ones no longer wanted, after their last events."""
        now = _ms(self.clock())
        active, recent = await self.candidates(now)
        wanted = frozenset(active | set(recent))
        for outage in sorted(wanted - self.following.keys()):
            self.following[outage] = await self.tail(outage) if initial else "0-0"
        for outage in sorted(self.following.keys() - wanted):
            await self._drain(outage)
            del self.following[outage]
            self._dispatch(Dropped(outage, now))
        self.wanted = wanted
        self.scan_ms = now
        self.scanned.set()

    async def _drain(self, outage: str) -> None:
        while True:
            entries = _entries(await self.store.xrange(keys.audit(outage), f"({self.following[outage]}", "+",
                                                       count=self.batch))
            for sid, fields in entries:
                self.following[outage] = sid
                self._dispatch(AuditEvent(outage, sid, fields))
            if len(entries) < self.batch:
                return

    # --- the loop ------------------------------------------------------------------------------
    async def step(self) -> int:
        """One turn: a scan, then one XREAD BLOCK over the followed streams. Events handed out.
        With no subscriber the hub reads nothing (a broker with no console open costs Redis
        nothing per decision): it forgets what it followed and waits for a subscriber."""
        if not self._subs:
            if not self._idle:
                self._idle = True
                self._wake.clear()
                self.following.clear()
                self.scan_ms = 0
            try:
                await asyncio.wait_for(self._wake.wait(), self.block_ms / 1000)
            except TimeoutError:
                pass
            return 0
        await self.scan(initial=self.scan_ms == 0)
        if not self.following:
            await asyncio.sleep(self.block_ms / 1000)
            return 0
        by_key = {keys.audit(o): o for o in self.following}
        streams: dict[Any, Any] = {k: self.following[o] for k, o in by_key.items()}
        if is_cluster(self.reader):
            reply = await self._read_per_slot(streams)
        else:
            reply = cast(list[Any], await self.reader.xread(streams, count=self.batch, block=self.block_ms) or [])
        handed = 0
        for key, raw in reply:
            outage = by_key.get(as_str(key))
            if outage is None or outage not in self.following:
                continue
            for sid, fields in _entries(raw):
                self.following[outage] = sid
                self._dispatch(AuditEvent(outage, sid, fields))
                handed += 1
        return handed

    async def _read_per_slot(self, streams: dict[Any, Any]) -> list[Any]:
        """A Redis Cluster's XREAD: one per slot, in one pipeline; a pause when nothing was new."""
        by_slot: dict[int, dict[Any, Any]] = {}
        for key, last in streams.items():
            by_slot.setdefault(self.reader.keyslot(key), {})[key] = last  # type: ignore[attr-defined]
        async with self.reader.pipeline(transaction=False) as pipe:
            for group in by_slot.values():
                pipe.xread(group, count=self.batch)
            replies = await pipe.execute()
        out = [item for reply in replies for item in (reply or [])]
        if not out:
            await asyncio.sleep(min(self.cluster_poll_ms, self.block_ms) / 1000)
        return out

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            try:
                await self.step()
                failures = 0
            except STORE_UNAVAILABLE as exc:
                failures += 1
                log.warning("audit feed: Redis unavailable (%s); retrying", exc)
                waiter = asyncio.ensure_future(stopping.wait())
                await asyncio.wait({waiter}, timeout=min(5.0, 0.2 * 2 ** min(failures, 5)))
                waiter.cancel()


class Feed:
    """One client's feed: every audit event after its cursor, then live, each once, in stream order
    per outage. ``outage`` None: every outage (cursor: ``FeedCursor`` text), else that outage's
    (cursor: a stream id). Without a cursor it starts at the end, after the last ``backlog`` events
    of each outage."""

    def __init__(self, hub: AuditHub, outage: str | None, cursor: str | None, backlog: int = 0) -> None:
        self.hub = hub
        self.outage = outage
        self.backlog = max(0, backlog)
        self._resume = cursor
        self.positions: dict[str, str] = {}
        self.since_ms = 0
        self._pruned: set[str] = set()
        self._catching: deque[str] = deque()
        self._page: deque[AuditEvent] = deque()
        self._sub: Subscription | None = None
        self._prune_when: tuple[str, str, int] | None = None  # (outage, its last event, scan) after catch-up
        self._stale: set[str] = set()
        self._opened_ms = 0
        if cursor is not None:  # checked now: a bad Last-Event-ID is the caller's error, before streaming
            if outage is not None:
                stream_key(cursor)
            else:
                FeedCursor.decode(cursor)

    # --- opening -------------------------------------------------------------------------------
    async def open(self, ready_timeout: float = 2.0) -> None:
        """Subscribes, then decides what to catch up on (the hub's first scan awaited, bounded)."""
        self._sub = self.hub.subscribe(self.outage)
        if not self.hub.scanned.is_set():
            try:
                await asyncio.wait_for(self.hub.scanned.wait(), ready_timeout)
            except TimeoutError:
                pass
        now = _ms(self.hub.clock())
        if self.outage is not None:
            if self._resume is not None:
                self.positions[self.outage] = self._resume
            else:
                self.positions[self.outage] = await self._start_of_backlog(self.outage)
            self._catching.append(self.outage)
            return
        if self._resume is not None:
            cursor = FeedCursor.decode(self._resume)
            self.positions = dict(cursor.positions)
            self.since_ms = cursor.since_ms
            active, recent = await self._add_unsent()
            # outages of the cursor that are over (neither active nor recent now): left out of the
            # cursor once caught up on, with ``since`` moved to now
            window = self.hub.follow_window_ms
            self._stale = {o for o in cursor.positions if o not in active and recent.get(o, 0) < now - window}
            self._opened_ms = now
        else:
            self.since_ms = now
            active, recent = await self.hub.candidates(now)
            for outage in active | set(recent):
                self.positions[outage] = await self._start_of_backlog(outage)
        self._catching.extend(sorted(self.positions))

    async def _add_unsent(self) -> tuple[set[str], dict[str, int]]:
        """Outages active or declared since ``since`` that this feed never sent anything of: from their start."""
        active, recent = await self.hub.candidates(self.since_ms)
        for outage in (active | set(recent)) - self.positions.keys():
            self.positions[outage] = "0-0"
        return active, recent

    async def _start_of_backlog(self, outage: str) -> str:
        count = max(1, self.backlog)
        last = await self.hub.store.xrevrange(keys.audit(outage), "+", "-", count=count)
        if not last:
            return "0-0"
        if self.backlog == 0:
            return as_str(last[0][0])
        return before(as_str(last[-1][0]))

    def close(self) -> None:
        if self._sub is not None:
            self.hub.unsubscribe(self._sub)
            self._sub = None

    # --- reading -------------------------------------------------------------------------------
    @property
    def cursor(self) -> str:
        """The Last-Event-ID that resumes right after what this feed has handed out."""
        if self.outage is not None:
            return self.positions[self.outage]
        shown = {o: p for o, p in self.positions.items() if o not in self._pruned}
        return FeedCursor(self.since_ms, shown).encode()

    def _fresh(self, event: AuditEvent) -> bool:
        pos = self.positions.get(event.outage)
        return pos is None or stream_key(event.id) > stream_key(pos)

    def _take(self, event: AuditEvent) -> AuditEvent:
        self.positions[event.outage] = event.id
        self._pruned.discard(event.outage)
        return event

    def _prune(self, outage: str, scan_ms: int) -> None:
        """Leaves an outage the hub let go of out of the cursor (it is neither active nor recent as
        of ``scan_ms``, which becomes ``since``: a resume will not read it again)."""
        if self.outage is None and outage in self.positions and outage not in self._catching:
            self._pruned.add(outage)
            self.since_ms = max(self.since_ms, scan_ms)

    async def _caught_up_event(self) -> AuditEvent | None:
        while not self._page:
            if not self._catching:
                return None
            outage = self._catching[0]
            pos = self.positions[outage]
            start = "-" if pos == "0-0" else f"({pos}"
            raw = await self.hub.store.xrange(keys.audit(outage), start, "+", count=PAGE)
            entries = _entries(raw)
            if len(entries) < PAGE:
                self._catching.popleft()
                if outage in self._stale:
                    self._stale.discard(outage)
                    self._prune_after(outage, entries)
            self._page.extend(AuditEvent(outage, sid, fields) for sid, fields in entries)
        return self._page.popleft()

    def _prune_after(self, outage: str, last_page: list[tuple[str, dict[str, str]]]) -> None:
        if not last_page:
            self._prune(outage, self._opened_ms)
        else:  # once its last events are handed out
            self._prune_when = (outage, last_page[-1][0], self._opened_ms)

    async def next(self, timeout: float) -> AuditEvent | None:
        """The next event, or None when none came within ``timeout`` seconds."""
        assert self._sub is not None, "open() first"
        while True:
            event = await self._caught_up_event()
            if event is not None:
                fresh = self._fresh(event)
                if fresh:
                    self._take(event)
                if self._prune_when and self._prune_when[:2] == (event.outage, event.id):
                    self._prune(event.outage, self._prune_when[2])
                    self._prune_when = None
                if fresh:
                    return event
                continue
            if self._sub.overflowed:  # fell behind the hub: read again from Redis, from where we are
                self.hub.unsubscribe(self._sub)
                self._sub = self.hub.subscribe(self.outage)
                if self.outage is None:
                    await self._add_unsent()
                self._catching.extend(o for o in sorted(self.positions) if o not in self._catching)
                continue
            try:
                item = await asyncio.wait_for(self._sub.queue.get(), timeout)
            except TimeoutError:
                return None
            if isinstance(item, Dropped):
                self._prune(item.outage, item.scan_ms)
                continue
            if self._fresh(item):
                return self._take(item)
