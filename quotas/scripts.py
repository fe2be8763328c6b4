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

    async def call(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        script = SCRIPTS[name]
        if not self._loaded:
            await self.load()
        try:
            return await self._evalsha(script, keys, args)
        except NoScriptError:
            await self.load()
            return await self._evalsha(script, keys, args)

    async def _evalsha(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        return await self._client.evalsha(script.sha, len(keys), *keys, *args)  # type: ignore[misc]
