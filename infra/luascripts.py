"""Lua scripts shipped in a package's ``lua/`` folder, run with EVALSHA (NOSCRIPT: load and retry once).

One script per atomic Redis operation. ``quotas.scripts`` does the same for the ledger with its shared
helper library prepended; this is the plain version for other packages' scripts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


class LuaScripts:
    def __init__(self, client: aioredis.Redis, package: str, names: Sequence[str]) -> None:
        self._client = client
        self._sources = {
            name: resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8") for name in names
        }
        self._shas = {name: hashlib.sha1(src.encode("utf-8")).hexdigest() for name, src in self._sources.items()}

    async def call(self, name: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        try:
            return await self._client.evalsha(self._shas[name], len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            await self._client.script_load(self._sources[name])
            return await self._client.evalsha(self._shas[name], len(keys), *keys, *args)  # type: ignore[misc]
