"""A small client of the Janus HTTP API (the REST transport), enough to put benchmark clients in an
AudioBridge room and a VideoRoom: create a session, attach plugin handles, send plugin messages (with
a JSEP offer or answer), receive their asynchronous replies by long poll, keep the session alive.

Janus answers a plugin message either at once (``success`` with ``plugindata``) or with an ``ack``,
the reply coming later as an ``event`` carrying the same transaction; events are read by one long
poll per session (``GET /janus/<session>?maxev=…``) and handed to the waiting request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import aiohttp

KEEPALIVE_S = 25  # below Janus's default session timeout (60 s)
POLL_TIMEOUT_S = 40  # a long poll returns a keepalive after ~30 s without events
REQUEST_TIMEOUT_S = 30  # generous: Janus shares a busy machine here


class JanusError(RuntimeError):
    """Janus refused a request (``error``), or a plugin answered with an ``error_code``."""


class JanusSession:
    """One Janus session over HTTP, with its long-poll and keepalive tasks."""

    def __init__(self, http: aiohttp.ClientSession, base: str, session_id: int) -> None:
        self.http, self.base, self.id = http, base.rstrip("/"), session_id
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []  # events nobody waited for (webrtcup, media, hangup...)
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]

    @classmethod
    async def create(cls, http: aiohttp.ClientSession, base: str) -> JanusSession:
        reply = await _post(http, base.rstrip("/"), {"janus": "create"})
        return cls(http, base, int(reply["data"]["id"]))

    async def attach(self, plugin: str) -> JanusHandle:
        reply = await _post(self.http, f"{self.base}/{self.id}", {"janus": "attach", "plugin": plugin})
        return JanusHandle(self, int(reply["data"]["id"]))

    async def destroy(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(JanusError, aiohttp.ClientError, asyncio.TimeoutError):
            await _post(self.http, f"{self.base}/{self.id}", {"janus": "destroy"})
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(JanusError("session destroyed"))

    def expect(self, transaction: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = fut
        return fut

    async def _poll(self) -> None:
        url = f"{self.base}/{self.id}?maxev=10"
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S)
        while True:
            try:
                async with self.http.get(url, timeout=timeout) as resp:
                    body = await resp.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.2)
                continue
            for event in body if isinstance(body, list) else [body]:
                fut = self._waiting.pop(str(event.get("transaction", "")), None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
                elif event.get("janus") != "keepalive":
                    self.events.append(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            with contextlib.suppress(JanusError, aiohttp.ClientError, asyncio.TimeoutError):
                await _post(self.http, f"{self.base}/{self.id}", {"janus": "keepalive"})


class JanusHandle:
    """A plugin handle: ``message()`` sends a request and returns the plugin's reply and JSEP."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session, self.id = session, handle_id

    async def message(
        self, body: dict[str, Any], jsep: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        transaction = os.urandom(8).hex()
        later = self.session.expect(transaction)
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        url = f"{self.session.base}/{self.session.id}/{self.id}"
        try:
            reply = await _post(self.session.http, url, request, transaction)
            if reply["janus"] == "ack":  # the reply comes as an event on the long poll
                reply = await asyncio.wait_for(later, timeout)
        finally:
            self.session._waiting.pop(transaction, None)
        data = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data or "error" in data:
            raise JanusError(f"{body.get('request')}: {data.get('error_code')} {data.get('error')}")
        return data, reply.get("jsep")

    async def detach(self) -> None:
        with contextlib.suppress(JanusError, aiohttp.ClientError, asyncio.TimeoutError):
            await _post(
                self.session.http, f"{self.session.base}/{self.session.id}/{self.id}", {"janus": "detach"}
            )


async def _post(
    http: aiohttp.ClientSession, url: str, request: dict[str, Any], transaction: str | None = None
) -> dict[str, Any]:
    request = {**request, "transaction": transaction or request.get("transaction") or os.urandom(8).hex()}
    async with http.post(url, json=request, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as resp:
        reply: dict[str, Any] = await resp.json(content_type=None)
    if reply.get("janus") == "error":
        raise JanusError(f"{request['janus']}: {reply.get('error', {}).get('code')} {reply.get('error', {}).get('reason')}")
    return reply
