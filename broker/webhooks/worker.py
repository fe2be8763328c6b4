"""Delivers queued webhook events: signed per Standard Webhooks, at least once, with retries.

Every broker process runs one worker. A worker takes a due delivery with a lease (``lease.lua``), so
no two deliver the same one at once; a worker that dies mid-delivery lets its lease run out and
another takes it. A failed attempt is retried after an exponential backoff with jitter; a delivery
still failing ``webhook_dead_after_s`` after its event goes to the dead-letter list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
from standardwebhooks import Webhook

from infra import logcontext
from infra.luascripts import LuaScripts
from infra.settings import Settings

from . import keys
from .events import SCRIPTS

log = logging.getLogger("backupplus.webhooks")

BATCH = 16  # deliveries one worker takes per round
USER_AGENT = "backupplus-webhooks/1"


def backoff_s(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Wait before attempt ``attempt + 1``: base × 2^(attempt-1), capped, between half and all of it."""
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    return ceiling * (0.5 + rand() / 2)


def _where(url: str) -> str:
    """A URL fit for the log: scheme, host and path, never its query (receivers put tokens there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _outage_of(payload: str) -> str | None:
    try:
        outage = json.loads(payload)["data"].get("outage")
    except (ValueError, KeyError, AttributeError):
        return None
    return outage if isinstance(outage, str) else None


class WebhookWorker:
    def __init__(self, redis: aioredis.Redis, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        assert settings.webhook_secret is not None or not settings.webhook_urls
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.token = secrets.token_hex(8)
        self._signer = Webhook(settings.webhook_secret.get_secret_value()) if settings.webhook_secret else None
        self._scripts = LuaScripts(redis, __package__ or "broker.webhooks", SCRIPTS)
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_s(self) -> float:
        return 2 * self.settings.webhook_timeout_s + 1

    def wake(self) -> None:
        """Look for due deliveries now (an event was just queued by this process)."""
        self._wake.set()

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s), headers={"User-Agent": USER_AGENT}
        )
        self._task = asyncio.create_task(self._loop(), name="backupplus-webhooks")

    async def stop(self) -> None:
        """Stops taking deliveries and lets those in flight end (bounded by the attempt timeout)."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.settings.webhook_timeout_s + 2)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.deliver_due() == BATCH
            except Exception as exc:  # noqa: BLE001 - Redis down: try again next round
                log.warning("webhook worker: %s: %s", type(exc).__name__, exc)
                busy = False
            if busy:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.webhook_poll_s)

    # --- delivering ------------------------------------------------------------------------------------
    async def deliver_due(self) -> int:
        """Takes up to BATCH due deliveries and attempts each once; returns how many it took."""
        now_ms = int(self.clock() * 1000)
        due = await self.redis.zrangebyscore(keys.DUE, "-inf", now_ms, start=0, num=BATCH)
        taken = []
        for raw_id in due:
            delivery_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            fields = await self._scripts.call(
                "lease",
                [keys.DUE, keys.delivery(delivery_id)],
                [delivery_id, now_ms, now_ms + int(self.lease_s * 1000), self.token],
            )
            if fields:
                flat = [f.decode() if isinstance(f, bytes) else str(f) for f in fields]
                taken.append((delivery_id, dict(zip(flat[::2], flat[1::2], strict=True))))
        if taken:
            await asyncio.gather(*(self._attempt(delivery_id, d) for delivery_id, d in taken))
        return len(taken)

    async def _attempt(self, delivery_id: str, d: dict[str, str]) -> None:
        with logcontext.scope(outage=_outage_of(d["payload"])):
            error = await self._post(d)
            now = self.clock()
            attempts = int(d.get("attempts", 0)) + 1
            deadline = int(d["created_ms"]) / 1000 + self.settings.webhook_dead_after_s
            if error is None:
                outcome, next_due = "delivered", now
                log.info("webhook %s %s delivered to %s (attempt %d)", d["type"], d["msg_id"], _where(d["url"]),
                         attempts)
            elif now >= deadline:
                outcome, next_due = "dead", now
                log.error("webhook %s %s to %s given up after %d attempts: %s", d["type"], d["msg_id"],
                          _where(d["url"]), attempts, error)
            else:
                outcome = "retry"
                wait = backoff_s(attempts, self.settings.webhook_retry_base_s, self.settings.webhook_retry_max_s)
                next_due = min(now + wait, deadline)
                log.warning("webhook %s %s to %s failed (%s), attempt %d; next in %.1f s", d["type"], d["msg_id"],
                            _where(d["url"]), error, attempts, next_due - now)
            settled = await self._scripts.call(
                "settle",
                [keys.DUE, keys.delivery(delivery_id), keys.DEAD],
                [delivery_id, self.token, outcome, int(next_due * 1000), error or "", int(now * 1000), keys.DEAD_MAX],
            )
            if not int(settled):
                log.warning("webhook %s: lease lost before its outcome was recorded", d["msg_id"])

    async def _post(self, d: dict[str, str]) -> str | None:
        """One attempt; None on a 2xx, else what went wrong (short, stable text for the record)."""
        assert self._session is not None and self._signer is not None
        sent_at = datetime.fromtimestamp(int(self.clock()), UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": d["msg_id"],
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signer.sign(d["msg_id"], sent_at, d["payload"]),
        }
        try:
            async with self._session.post(d["url"], data=d["payload"].encode(), headers=headers) as resp:
                await resp.read()
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__
