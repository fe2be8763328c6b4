"""A real Redis Cluster for tests: ``primaries`` redis-server processes with ``--cluster-enabled yes``
(and ``replicas_each`` replicas each) on free loopback ports, joined by ``redis-cli --cluster create``.
Nodes keep an AOF (fsync each second) and their nodes.conf in their own directory, so a killed node
started again rejoins the cluster with its identity (as a replica of whoever took its slots)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import redis
from redis.cluster import RedisCluster as SyncRedisCluster

from infra.redisproc import RedisServer


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = random.randrange(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


class ClusterSetup:
    """``start`` brings the cluster up and waits for ``cluster_state:ok`` on every node. ``url`` is the
    broker's ``redis+cluster://`` URL; ``kill_primary_of(key)`` is a kill -9 of the primary that owns
    ``key``'s slot. ``node_timeout_ms`` is ``cluster-node-timeout``: how long a silent primary takes to
    be failed over (its replica is promoted shortly after)."""

    def __init__(self, tmp: Path, *, primaries: int = 3, replicas_each: int = 1, node_timeout_ms: int = 2000) -> None:
        self.tmp = tmp
        self.n_primaries = primaries
        self.replicas_each = replicas_each
        self.node_timeout_ms = node_timeout_ms
        self.servers: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Self:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is missing (Debian package redis-tools, installed with redis-server)")
        try:
            for i in range(self.n_primaries * (1 + self.replicas_each)):
                port = cluster_port()
                d = self.tmp / f"node{i}-{port}"
                self.servers.append(RedisServer(d, port=port, persistent=True, extra_args=[
                    "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    # the shards that still have a primary keep serving while one is failed over
                    "--cluster-require-full-coverage", "no",
                    "--maxmemory-policy", "noeviction",
                ]).start())
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                 "--cluster-replicas", str(self.replicas_each), "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
            self.wait(self.healthy, timeout, "the cluster did not become ok with every replica in sync")
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> SyncRedisCluster:
        live = [p for s, p in zip(self.servers, self.ports, strict=True) if s.process and s.process.poll() is None]
        return SyncRedisCluster(host="127.0.0.1", port=live[0], socket_timeout=2, decode_responses=True)

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as one live node sees it: id, addr, flags, slots (as text)."""
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                continue
            try:
                raw = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True).execute_command(
                    "CLUSTER", "NODES")
            except redis.RedisError:
                continue
            text = raw if isinstance(raw, str) else "\n".join(f"{k} {v}" for k, v in raw.items())
            out = []
            for line in text.strip().splitlines():
                parts = line.split()
                out.append({"id": parts[0], "addr": parts[1].split("@")[0], "flags": parts[2],
                            "master": parts[3], "slots": " ".join(parts[8:])})
            return out
        raise RuntimeError("no cluster node answered")

    def healthy(self) -> bool:
        """cluster_state ok on every live node, every primary with its replicas attached and in sync."""
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                continue
            r = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True)
            if "cluster_state:ok" not in r.execute_command("CLUSTER", "INFO"):
                return False
            info = r.info("replication")
            if info.get("role") == "master" and info.get("connected_slaves", 0) < self.replicas_each and \
                    self._serves_slots(server.port):
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def _serves_slots(self, port: int) -> bool:
        return any(n["addr"].endswith(f":{port}") and "master" in n["flags"] and n["slots"] for n in self.nodes())

    def primary_port_of(self, key: str) -> int:
        """The port of the primary that owns ``key``'s slot now."""
        client = self.client()
        try:
            node = client.get_node_from_key(key)
            return int(node.port)
        finally:
            client.close()

    def replicas_of(self, key: str) -> list[RedisServer]:
        """The replicas of the primary that owns ``key``'s slot now."""
        port = self.primary_port_of(key)
        nodes = self.nodes()
        primary_id = next(n["id"] for n in nodes if n["addr"].endswith(f":{port}"))
        ports = {int(n["addr"].rsplit(":", 1)[1]) for n in nodes if n["master"] == primary_id}
        return [s for s in self.servers if s.port in ports]

    def kill_primary_of(self, key: str) -> int:
        """kill -9 of the primary owning ``key``'s slot; its port."""
        port = self.primary_port_of(key)
        for server in self.servers:
            if server.port == port:
                server.kill()
                return port
        raise RuntimeError(f"the primary on {port} is not one of ours")

    def restart(self, port: int, timeout: float = 60.0) -> None:
        """Starts the killed node again (it rejoins as a replica) and waits until the cluster is healthy."""
        for server in self.servers:
            if server.port == port:
                server.start()
                break
        else:
            raise RuntimeError(f"no node of ours on {port}")
        self.wait(self.healthy, timeout, "the restarted node did not rejoin")

    @staticmethod
    def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, RuntimeError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"redis cluster: {what} within {timeout:.0f} s")

    def flush(self) -> None:
        """FLUSHALL on every primary (between tests that share the cluster)."""
        for n in self.nodes():
            if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"]:
                host, port = n["addr"].rsplit(":", 1)
                redis.Redis(host=host, port=int(port), socket_timeout=2).flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()
