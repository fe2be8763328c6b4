"""Connecting to the shared Redis: a plain URL, or Sentinel for a highly available primary.

* ``redis://[:password@]host:port/db``, ``rediss://…``, ``unix:///path.sock`` — one Redis;
* ``redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]`` — ask the Sentinels
  which server is the primary of ``service_name``; after a failover the next connection goes to
  the new primary (the ledger's scripts are reloaded there on NOSCRIPT).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """(sentinel addresses, service name, db, password) of a ``redis+sentinel://`` URL."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL: {url!r}")
    netloc = parts.netloc.rsplit("@", 1)
    password = unquote(netloc[0].split(":", 1)[-1]) if len(netloc) == 2 and ":" in netloc[0] else None
    hosts = []
    for item in netloc[-1].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address must be host:port, got {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a redis+sentinel:// URL names its service: redis+sentinel://host:26379/mymaster")
    db = int(path[1]) if len(path) > 1 else 0
    return hosts, path[0], db, password


def connect(url: str, *, max_connections: int = 64, **options: Any) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (see the module doc). Bursts wait for a free connection
    (blocking pool) instead of failing with "Too many connections"."""
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        hosts, service, db, password = parse_sentinel_url(url)
        sentinel = Sentinel(hosts, socket_timeout=options.get("socket_timeout", 5))
        return sentinel.master_for(service, db=db, password=password, max_connections=max_connections, **options)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5, **options)
    return aioredis.Redis(connection_pool=pool)
