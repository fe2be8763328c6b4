"""Loads the ledger's Lua scripts from the package and runs them with EVALSHA.

Each ``quotas/lua/<name>.lua`` is one atomic operation. ``_lib.lua`` (the ledger's shared helpers
and its KEYS layout) is prepended to each ledger script; the few scripts on one global key
(``GLOBAL_SCRIPT_NAMES``) run as they are. The first call on a client registers every script with SCRIPT LOAD; calls then use
EVALSHA, and a NOSCRIPT reply (server restarted, SCRIPT FLUSH, failover) loads them again and
retries once. redis-py's ``register_script`` is deliberately not used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.redisconn import ReplicaWait, is_cluster
from infra.text import as_str

from .errors import LedgerError

SCRIPT_NAMES: tuple[str, ...] = (
    "open_outage",
    "acknowledge",
    "sla_overdue",
    "set_planned_end",
    "close_outage",
    "add_conference",
    "update_conference",
    "remove_conference",
    "admit",
    "renew",
    "release",
    "leave",
    "reclaim",
    "repair",
)
# Scripts on global keys, without the ledger's helpers.
GLOBAL_SCRIPT_NAMES: tuple[str, ...] = ("del_if_equal", "place_node", "ticket_open", "ticket_outcome")
# The writes a client with a write concern (``durability strict``) waits for: a declare's and an
# admission's. Other calls may opt in with ``call(..., wait=...)``.
DURABLE_SCRIPTS: frozenset[str] = frozenset({"open_outage", "admit"})


class NotReplicated(RedisTimeoutError):
    """Fewer replicas than the write concern asks acknowledged the write within its timeout: the
    write is on the primary but not promised to survive a failover (answered as 503)."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files("quotas").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def _load_sources() -> dict[str, Script]:
    lib = _read("_lib")
    out: dict[str, Script] = {}
    for name in SCRIPT_NAMES + GLOBAL_SCRIPT_NAMES:
        body = _read(name)
        source = f"{lib}\n-- ==== {name}.lua ====\n{body}" if name in SCRIPT_NAMES else body
        out[name] = Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())
    return out


SCRIPTS: dict[str, Script] = _load_sources()


class ScriptRunner:
    """Runs ledger scripts on one client (decode_responses True or False)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._loaded = False

    async def load(self) -> None:
        """SCRIPT LOAD every script (idempotent on the server)."""
        for script in SCRIPTS.values():
            sha = as_str(await self._client.script_load(script.source))
            if sha != script.sha:
                raise LedgerError(f"SCRIPT LOAD of {script.name} returned {sha}, expected {script.sha}")
        self._loaded = True

    async def call(
        self, name: str, keys: Sequence[str], args: Sequence[str | int], *, wait: ReplicaWait | None = None
    ) -> Any:
        """EVALSHA ``name``. With ``wait`` (or the client's write concern for DURABLE_SCRIPTS), WAIT for
        replicas on the same connection, in the same round trip; NotReplicated when too few acknowledged."""
        script = SCRIPTS[name]
        if wait is None and name in DURABLE_SCRIPTS:
            wait = getattr(self._client, "replica_wait", None)
        if not self._loaded:
            await self.load()
        run = self._evalsha if wait is None else self._evalsha_wait
        try:
            return await run(script, keys, args, wait)
        except NoScriptError:
            await self.load()
            return await run(script, keys, args, wait)

    async def _evalsha_wait(
        self, script: Script, keys: Sequence[str], args: Sequence[str | int], wait: ReplicaWait | None
    ) -> Any:
        """EVALSHA then WAIT in one non-transactional pipeline: one connection (WAIT counts the writes
        of its own connection), one round trip. On a Redis Cluster, WAIT goes to the primary of the
        keys' slot (the pipeline sends a node's commands on one connection); if the slot moved
        meanwhile (the script was redirected), the write is answered as not replicated."""
        assert wait is not None
        node = None
        wait_options: dict[str, Any] = {}
        if is_cluster(self._client):
            await self._client.initialize()  # type: ignore[attr-defined]  # the topology (no-op once read)
            node = self._client.get_node_from_key(keys[0])  # type: ignore[attr-defined]
            wait_options["target_nodes"] = node
        async with self._client.pipeline(transaction=False) as pipe:
            # execute_command: a cluster pipeline refuses its evalsha() method (it routes by the keys all the same)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms, **wait_options)
            result, acked = await pipe.execute(raise_on_error=False)
        if node is not None and not isinstance(result, Exception):
            now = self._client.get_node_from_key(keys[0])  # type: ignore[attr-defined]
            if now is None or now.name != node.name:
                raise NotReplicated(f"{script.name}: the slot moved to {getattr(now, 'name', None)} during the write")
        if isinstance(result, Exception):
            raise result
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < wait.replicas:
            raise NotReplicated(
                f"{script.name}: {acked} of {wait.replicas} replica(s) acknowledged within {wait.timeout_ms} ms"
            )
        return result

    async def _evalsha(
        self, script: Script, keys: Sequence[str], args: Sequence[str | int], wait: ReplicaWait | None = None
    ) -> Any:
        return await self._client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]
