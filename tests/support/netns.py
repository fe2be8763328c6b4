"""Network faults between a broker and Redis, on real packets: the broker runs in a network
namespace made by the test, joined to the host by a veth pair; Redis listens on the host end.

* a partition and packet loss: nftables rules inside the namespace on the Redis port (kernel level);
* latency: ``tc netem`` when the kernel has it (``netem_available``); this machine's kernel is built
  without ``sch_netem``, so ``DelayRelay``, a TCP relay on the host end that holds each chunk for the
  delay, stands in (the broker's Redis URL then points at the relay).

Everything is named ``bpc<pid>x<n>`` and removed by ``close`` (deleting the namespace deletes its
veth pair and its rules), also when the test fails. Needs root, ``ip`` and ``nft``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import threading
from typing import Self

_counter = itertools.count()
TABLE = "bpchaos"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=20)


def can_make_namespaces() -> str | None:
    """None when this process can make namespaces and nft rules; otherwise why not (a skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make setup-test installs iproute2 and nftables)"
    return None


class ChaosNet:
    """One namespace with a veth pair: ``host_ip`` on the host side, ``ns_ip`` inside."""

    def __init__(self) -> None:
        n = next(_counter)
        self.name = f"bpc{os.getpid() % 100000}x{n}"
        subnet = (os.getpid() * 7 + n) % 250 + 1  # 10.<subnet>.<n>.0/30: unlikely to meet another run's
        self.host_ip = f"10.{200 + subnet % 50}.{subnet}.1"
        self.ns_ip = f"10.{200 + subnet % 50}.{subnet}.2"
        self.host_if = f"{self.name}a"
        self._made = False

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> Self:
        ns_if = f"{self.name}b"
        _run("ip", "netns", "add", self.name)
        self._made = True
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", self.name)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("ip", "-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", ns_if)
        _run("ip", "-n", self.name, "link", "set", ns_if, "up")
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def close(self) -> None:
        if not self._made:
            return
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _run("ip", "netns", "del", self.name)
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _run("ip", "link", "del", self.host_if)  # normally gone with the namespace
        self._made = False

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    # --- faults on the traffic to and from a TCP port of the host side ---------------------------
    def _rules(self, port: int, action: str) -> None:
        self.clear()
        script = (
            f"table inet {TABLE} {{\n"
            f"  chain out {{ type filter hook output priority 0; policy accept;\n"
            f"    ip daddr {self.host_ip} tcp dport {port} {action}\n  }}\n"
            f"  chain inp {{ type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {self.host_ip} tcp sport {port} {action}\n  }}\n}}\n"
        )
        subprocess.run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], input=script, check=True,
                       capture_output=True, text=True, timeout=20)

    def partition(self, port: int) -> None:
        """Every packet to or from the host's ``port`` dropped (no reset: connections hang)."""
        self._rules(port, "drop")

    def loss(self, port: int, percent: int) -> None:
        """``percent`` % of the packets each way dropped at random."""
        self._rules(port, f"numgen random mod 100 < {percent} drop")

    def clear(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "nft", "delete", "table", "inet", TABLE],
                       capture_output=True, timeout=20, check=False)


def netem_available() -> bool:
    """Whether the kernel has ``sch_netem`` (tried on a dummy device in a throwaway namespace)."""
    if can_make_namespaces() is not None or shutil.which("tc") is None:
        return False
    with ChaosNet() as net:
        done = subprocess.run(["ip", "netns", "exec", net.name, "tc", "qdisc", "add", "dev", "lo", "root",
                               "netem", "delay", "1ms"], capture_output=True, check=False, timeout=20)
        return done.returncode == 0


class DelayRelay:
    """A TCP relay from ``listen_host:port`` to ``127.0.0.1:target_port`` that delivers every chunk
    ``delay_s`` after it arrived, in order, each way (so a request/response pays 2 × delay_s).
    ``delay_s`` can change at any time. Runs its own event loop in a thread."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        self.listen_host = listen_host
        self.target_port = target_port
        self.delay_s = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, self.listen_host, 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                dst.write(data)
                await dst.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await src.read(65536):
                queue.put_nowait((loop.time() + self.delay_s, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sender.cancel()
            dst.close()
