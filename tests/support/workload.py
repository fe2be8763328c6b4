"""HTTP workload for fault tests: a contract, an outage and a conference to admit into, and timed
admissions (status and seconds), against any broker process."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import aiohttp

from .brokers import AUTH


@dataclass
class Target:
    outage: str
    conference: str
    join_token: str

    @property
    def join_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.join_token}"}


async def seed(base: str, number: str = "CHAOS-1") -> Target:
    today = date.today()
    contract = {
        "number": number, "client": {"company": "Chaos"}, "status": "active", "term_years": 3,
        "start_date": (today - timedelta(days=30)).isoformat(),
        "equipment": [{"serial": "S1", "brand": "Poly", "model": "RMX", "kind": "video_bridge",
                       "warranty_until": (today + timedelta(days=365)).isoformat()}],
    }
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=AUTH, timeout=timeout) as s:
        async with s.put(f"{base}/v1/contracts/{number}", json=contract) as r:
            assert r.status in (200, 201), await r.text()
        async with s.post(f"{base}/v1/outages", json={"contract": number, "serial": "S1",
                                                      "ticket": {"priority": "urgent", "site": "Lab",
                                                                 "contact": "Chaos team",
                                                                 "description": "fault injection"}}) as r:
            assert r.status == 201, await r.text()
            outage = await r.json()
        async with s.post(f"{base}/v1/outages/{outage['id']}/conferences", json={"title": "chaos"}) as r:
            assert r.status == 201, await r.text()
            conf = await r.json()
    return Target(outage["id"], conf["id"], conf["join_token"])


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (connection error or client timeout)
    seconds: float
    at: float  # monotonic time the request was sent
    body: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False  # the broker answered what an earlier request with the same Idempotency-Key made


async def admit(session: aiohttp.ClientSession, base: str, target: Target, kind: str = "video",
                timeout: float = 10.0, idempotency_key: str | None = None) -> Answer:
    t0 = time.monotonic()
    headers = dict(target.join_auth)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        async with session.post(f"{base}/v1/conferences/{target.conference}/participants",
                                json={"display_name": "chaos", "kind": kind, "downgrade": False},
                                headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            body = await r.json(content_type=None)
            return Answer(r.status, time.monotonic() - t0, t0, body if isinstance(body, dict) else {},
                          r.headers.get("Idempotent-Replayed") == "true")
    except (TimeoutError, aiohttp.ClientError):
        return Answer(0, time.monotonic() - t0, t0)


async def leave(session: aiohttp.ClientSession, base: str, participant_id: str) -> int:
    try:
        async with session.delete(f"{base}/v1/participants/{participant_id}", headers=AUTH,
                                  timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


async def get_status(session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> Answer:
    t0 = time.monotonic()
    try:
        async with session.get(url, headers=AUTH, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            await r.read()
            return Answer(r.status, time.monotonic() - t0, t0)
    except (TimeoutError, aiohttp.ClientError):
        return Answer(0, time.monotonic() - t0, t0)


async def until_ok(session: aiohttp.ClientSession, url: str, within: float, every: float = 0.05) -> float:
    """Seconds until ``url`` answers 200 (polled); raises AssertionError past ``within``."""
    t0 = time.monotonic()
    while True:
        answer = await get_status(session, url, timeout=2.5)
        if answer.status == 200:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, f"{url} still answers {answer.status} after {within} s"
        await asyncio.sleep(every)
