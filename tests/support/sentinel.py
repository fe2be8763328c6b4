"""A real Redis Sentinel setup for failover tests: one primary, replicas and sentinels, all
``redis-server`` processes on loopback (sentinels as ``redis-server FILE --sentinel``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Self

import redis

from infra.redisproc import RedisServer, free_port


class SentinelSetup:
    """``start`` brings up the primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2)
    and waits until every sentinel knows every replica and the other sentinels. ``url`` is the
    broker's ``redis+sentinel://`` URL; ``kill_primary`` is a kill -9 of the current primary."""

    def __init__(self, tmp: Path, *, service: str = "bp", replicas: int = 2, sentinels: int = 3,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        self.tmp = tmp
        self.service = service
        self.n_replicas = replicas
        self.n_sentinels = sentinels
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[RedisServer] = []
        self.sentinel_ports: list[int] = []
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Self:
        try:
            primary = RedisServer(self.tmp / "primary").start()
            self.servers.append(primary)
            for i in range(self.n_replicas):
                self.servers.append(RedisServer(self.tmp / f"replica{i}", extra_args=[
                    "--replicaof", "127.0.0.1", str(primary.port)]).start())
            self._wait(lambda: int(redis.Redis(port=primary.port).info("replication")["connected_slaves"])
                       == self.n_replicas, timeout, "replicas did not connect")
            for i in range(self.n_sentinels):
                port = free_port()
                d = self.tmp / f"sentinel{i}"
                d.mkdir(parents=True, exist_ok=True)
                conf = d / "sentinel.conf"  # a sentinel rewrites its config: a writable file
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d / 'sentinel.log'}\n"
                    f"sentinel monitor {self.service} 127.0.0.1 {primary.port} 2\n"
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {self.service} 1\n"
                )
                self._sentinels.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                        start_new_session=True))
                self.sentinel_ports.append(port)
            self._wait(self._sentinels_agree, timeout, "sentinels did not discover each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            try:
                s = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
                master = s.sentinel_master(self.service)
                if int(master["num-slaves"]) < self.n_replicas or int(master["num-other-sentinels"]) < \
                        self.n_sentinels - 1:
                    return False
            except (redis.RedisError, KeyError):
                return False
        return True

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"sentinel setup: {what} within {timeout:.0f} s")

    def primary_port(self) -> int:
        """The primary's port as a sentinel answers it now."""
        for port in self.sentinel_ports:
            try:
                _host, p = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(self.service)
                return int(p)
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answered")

    def kill_primary(self) -> int:
        """kill -9 of the current primary; its port."""
        port = self.primary_port()
        for server in self.servers:
            if server.port == port:
                server.kill()
                return port
        raise RuntimeError(f"the primary on {port} is not one of ours")

    def restart(self, port: int, timeout: float = 60.0) -> None:
        """Starts the killed server on ``port`` again and waits until the current primary has all
        its replicas back (the sentinels make the old primary a replica of the new one)."""
        for server in self.servers:
            if server.port == port:
                server.start()
                break
        else:
            raise RuntimeError(f"no server of ours on {port}")

        def replicas_back() -> bool:
            info = redis.Redis(port=self.primary_port(), socket_timeout=1).info("replication")
            return info.get("role") == "master" and int(info["connected_slaves"]) == self.n_replicas

        self._wait(replicas_back, timeout, "the restarted server did not rejoin as a replica")

    def stop(self) -> None:
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._sentinels:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._sentinels.clear()
        for server in self.servers:
            server.stop()
        self.servers.clear()
