"""Connecting to the shared Redis: a plain URL, or Sentinel for a highly available primary.

* ``redis://[:password@]host:port/db``, ``rediss://…``, ``unix:///path.sock`` — one Redis;
* ``redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]`` — ask the Sentinels
  which server is the primary of ``service_name``; after a failover the next connection goes to
  the new primary (the ledger's scripts are reloaded there on NOSCRIPT).
* ``redis+cluster://[[user]:password@]host:port[,host:port…][/]`` — a Redis Cluster, found from
  any of the nodes given (a ``redis.asyncio.RedisCluster``): each command goes to the primary of
  its key's slot, and after a failover the client reads the new topology and sends it again. Every
  multi-key operation of Backup+ stays within one hash tag; pub/sub is sharded (``publish``).

Every client made here retries connection errors and timeouts with exponential backoff, within a
time budget (``StorePolicy``): a pooled connection that a Redis restart left dead is replaced and
the command sent again, while a Redis that stays down still gets its 503 answered within 2 s.
``check_store`` is the start-up check a broker runs before it serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from .settings import Settings

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
T = TypeVar("T")
# What "the store is unavailable right now" looks like (answered 503 store_unavailable, retried later):
# unreachable, too slow, loading its data; on a Redis Cluster also the window of a failover (the
# cluster down, a slot without a primary, a slot being moved).
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, BusyLoadingError, ClusterDownError, SlotNotCoveredError, TryAgainError,
)


class StoreMisconfigured(RuntimeError):
    """The Redis given to a broker would break the ledger's promises (e.g. it may evict keys)."""


@dataclass(frozen=True)
class ReplicaWait:
    """A write concern: after a durable write, ``WAIT replicas timeout_ms`` on the same connection."""

    replicas: int
    timeout_ms: int


class StoreClient(aioredis.Redis):
    """An asyncio Redis client that carries its write concern (None: writes are not waited for).
    ``quotas.scripts.ScriptRunner`` reads it for the scripts it makes durable."""

    replica_wait: ReplicaWait | None = None


class StoreCluster(RedisCluster):
    """The same for a Redis Cluster. ``aclose`` takes (and ignores) ``close_connection_pool`` like a
    plain client's, so that callers close either the same way.

    redis-py's cluster client retries a command (re-reading the topology, waiting 0.25 s after a
    CLUSTERDOWN) with no time budget; ``budget_s`` bounds each command and each pipeline as a whole
    (then a redis TimeoutError: 503, the request's 2 s bound kept during a failover). A command cut
    short is treated like one that timed out: its connection is closed (redis-py does so on
    cancellation) and an admission it may have made is found again by its Idempotency-Key."""

    replica_wait: ReplicaWait | None = None
    budget_s: float | None = None

    async def aclose(self, *, close_connection_pool: bool | None = None) -> None:  # type: ignore[override]
        await super().aclose()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await within_budget(self.budget_s, super().execute_command(*args, **kwargs), args[0])

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # (raises, as redis-py's)
        return BudgetClusterPipeline(self, transaction)  # type: ignore[abstract]


class BudgetClusterPipeline(ClusterPipeline):
    """A cluster pipeline whose ``execute`` keeps to its client's ``budget_s``."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        budget = getattr(self.cluster_client, "budget_s", None)
        return await within_budget(budget, super().execute(raise_on_error, allow_redirections), "pipeline")  # type: ignore[no-any-return]


async def within_budget(budget_s: float | None, call: Awaitable[T], what: object) -> T:
    """``call`` (a cluster command or pipeline) within ``budget_s``, its failures as the store's."""
    try:
        if budget_s is None:
            return await call
        async with asyncio.timeout(budget_s):
            return await call
    except TimeoutError as exc:  # asyncio's (redis-py's own is a RedisError)
        raise RedisTimeoutError(f"{what!s}: no answer from the cluster within {budget_s} s") from exc
    except AttributeError as exc:
        # After a CLUSTERDOWN redis-py's cluster client closes every node's connections, also those
        # other commands are using at that moment: they fail with an AttributeError on the closed
        # connection (seen during failovers under load). It is a lost connection.
        raise RedisConnectionError(f"{what!s}: connection closed under the command ({exc})") from exc


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (sharded pub/sub, one XREAD per slot, INFO per primary)."""
    return isinstance(client, RedisCluster)


async def publish(client: aioredis.Redis, channel: str, message: str) -> None:
    """PUBLISH, or on a Redis Cluster SPUBLISH: the message goes to the shard that owns the channel's
    slot (its subscribers use SSUBSCRIBE there) instead of being broadcast to every node."""
    if is_cluster(client):
        await client.spublish(channel, message)  # type: ignore[misc]
    else:
        await client.publish(channel, message)


@dataclass(frozen=True)
class StorePolicy:
    """Timeouts and retries of a Redis client (``infra.settings`` has the same defaults)."""

    command_timeout_s: float = 0.5  # one command's answer (socket read)
    connect_timeout_s: float = 0.25
    retries: int = 3
    retry_base_s: float = 0.025  # backoff: base * 2^n with jitter, capped
    retry_cap_s: float = 0.25
    retry_budget_s: float = 1.0  # no new attempt that could end after this, from the first one
    pool_timeout_s: float = 0.75  # waiting for a free pooled connection (+ the retry budget < 2 s)

    @classmethod
    def from_settings(cls, settings: Settings) -> StorePolicy:
        """From an ``infra.settings.Settings`` (its ``redis_*`` fields)."""
        return cls(
            command_timeout_s=settings.redis_command_timeout_s,
            connect_timeout_s=settings.redis_connect_timeout_s,
            retries=settings.redis_retries,
            retry_base_s=settings.redis_retry_base_s,
            retry_cap_s=settings.redis_retry_cap_s,
            retry_budget_s=settings.redis_retry_budget_s,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )

    def retry(self) -> BudgetRetry:
        return BudgetRetry(self)


class BudgetRetry(Retry):
    """redis-py's ``Retry`` (exponential backoff with jitter, on ConnectionError and TimeoutError) that
    also stops once another attempt could not finish within ``retry_budget_s`` of the first: the
    bound that keeps a request's 503 within 2 s whatever the count of retries."""

    def __init__(self, policy: StorePolicy) -> None:
        super().__init__(
            ExponentialWithJitterBackoff(base=policy.retry_base_s, cap=policy.retry_cap_s),
            policy.retries,
            (RedisConnectionError, RedisTimeoutError),
        )
        self.policy = policy

    async def call_with_retry(  # type: ignore[override]
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        self._backoff.reset()
        start = time.monotonic()
        attempt_s = max(self.policy.command_timeout_s, self.policy.connect_timeout_s)
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                backoff = self._backoff.compute(failures)
                spent = time.monotonic() - start
                if failures > self._retries or spent + backoff + attempt_s > self.policy.retry_budget_s:
                    raise
                if backoff > 0:
                    await asyncio.sleep(backoff)


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


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """(node addresses, username, password) of a ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    if parts.scheme != CLUSTER_SCHEME:
        raise ValueError(f"not a {CLUSTER_SCHEME}:// URL: {url!r}")
    netloc = parts.netloc.rsplit("@", 1)
    username = password = None
    if len(netloc) == 2:
        user, _, secret = netloc[0].partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    hosts = []
    for item in netloc[-1].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster node address must be host:port, got {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    if [p for p in parts.path.split("/") if p not in ("", "0")]:
        raise ValueError("a Redis Cluster has database 0 only: redis+cluster://host:port,host:port/")
    return hosts, username, password


def connect(
    url: str,
    *,
    max_connections: int = 64,
    policy: StorePolicy | None = None,
    replica_wait: ReplicaWait | None = None,
    **options: Any,
) -> StoreClient:
    """An asyncio Redis client for ``url`` (see the module doc) with ``policy``'s timeouts and
    retries. Bursts wait for a free connection (blocking pool) instead of failing with "Too many
    connections", at most ``pool_timeout_s``. ``options`` go to the connections and win."""
    policy = policy or StorePolicy()
    client = _connect(url, max_connections, policy, options)
    client.replica_wait = replica_wait
    return client


def store_client(settings: Settings, **options: Any) -> StoreClient:
    """The broker's client for ``settings.redis_url``: its timeouts and retries, and with
    ``durability strict`` the write concern (WAIT for ``durability_wait_replicas``)."""
    assert settings.redis_url, "store_client needs settings.redis_url (serve starts a private Redis first)"
    wait = None
    if settings.durability == "strict" and settings.durability_wait_replicas > 0:
        wait = ReplicaWait(settings.durability_wait_replicas, settings.durability_wait_ms)
    return connect(settings.redis_url, policy=StorePolicy.from_settings(settings), replica_wait=wait, **options)


def _connect(url: str, max_connections: int, policy: StorePolicy, options: dict[str, Any]) -> StoreClient:
    conn_options: dict[str, Any] = {
        "socket_timeout": policy.command_timeout_s,
        "socket_connect_timeout": policy.connect_timeout_s,
        "retry": policy.retry(),
        **options,
    }
    if url.startswith(f"{CLUSTER_SCHEME}://"):
        nodes, username, password = parse_cluster_url(url)
        # retries: the cluster client re-reads the topology (CLUSTER SLOTS) before each new attempt
        cluster = StoreCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes], username=username, password=password,
            max_connections=max_connections, **conn_options,
        )
        cluster.budget_s = policy.retry_budget_s + policy.command_timeout_s
        return cast(StoreClient, cluster)  # answers the same commands; callers keep one client type
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        hosts, service, db, password = parse_sentinel_url(url)
        sentinel = Sentinel(
            hosts,
            sentinel_kwargs={
                "socket_timeout": policy.connect_timeout_s,
                "socket_connect_timeout": policy.connect_timeout_s,
            },
        )
        client = sentinel.master_for(
            service, redis_class=StoreClient, db=db, password=password, max_connections=max_connections,
            **conn_options,
        )
        assert isinstance(client, StoreClient)
        return client
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=policy.pool_timeout_s, **conn_options
    )
    return StoreClient(connection_pool=pool)


async def check_store(client: StoreClient) -> None:
    """The start-up check of a broker's Redis: it must never evict keys (``maxmemory-policy
    noeviction``): an evicted counter or lease silently breaks the caps. With a write concern, the
    primary must have that many replicas connected. Read from INFO, which works where CONFIG is
    disabled. On a Redis Cluster every primary is checked. Raises StoreMisconfigured with what to change."""
    for where, info in await _info_of_primaries(client, "memory"):
        policy = str(info.get("maxmemory_policy", ""))
        if policy != "noeviction":
            raise StoreMisconfigured(
                f"Redis{where} has maxmemory-policy {policy!r}: it may evict the ledger's keys and break the caps. "
                "Set `maxmemory-policy noeviction` in its configuration (or CONFIG SET maxmemory-policy noeviction)."
            )
    wait = client.replica_wait
    if wait is not None:
        for where, replication in await _info_of_primaries(client, "replication"):
            connected = int(replication.get("connected_slaves", 0))
            if connected < wait.replicas:
                raise StoreMisconfigured(
                    f"durability strict waits for {wait.replicas} replica(s) of each declare and admission, but the "
                    f"Redis primary{where} has {connected} connected: add replicas or run with --durability standard."
                )


async def _info_of_primaries(client: StoreClient, section: str) -> list[tuple[str, dict[str, Any]]]:
    """INFO ``section`` of the primary, or of each primary of a cluster: (" node host:port" or "", info)."""
    if not is_cluster(client):
        return [("", await client.info(section))]
    cluster = cast(RedisCluster, client)
    await cluster.initialize()  # reads the topology once (no-op when already done)
    out = []
    for node in cluster.get_primaries():
        info = await cluster.info(section, target_nodes=node)  # type: ignore[call-arg]
        out.append((f" node {node.name}", dict(info)))
    return out
