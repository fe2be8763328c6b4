"""Broker processes (``backupplus serve``) for fault tests: started on a free port, optionally inside
a network namespace or under ``faketime``, killed or drained like an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from infra.redisproc import free_port

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "op-chaos-token-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}


def faketime_prefix(offset_s: float) -> list[str]:
    """The command prefix that runs a process with its clock ``offset_s`` ahead (negative: behind),
    wall clock only (Debian's ``faketime``/libfaketime; monotonic time is left true so timeouts hold)."""
    sign = "+" if offset_s >= 0 else "-"
    return ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", f"{sign}{abs(offset_s)}s"]


class BrokerProcess:
    """One ``backupplus serve --no-media`` process. ``prefix`` wraps the command (``ip netns exec NS``,
    ``faketime_prefix(30)``); ``env`` and ``args`` add to its environment and command line. Its output
    goes to ``log_path``."""

    def __init__(
        self,
        redis_url: str | None,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        media: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.log_path = log_path
        self.host = host
        self.port = port or free_port()
        self.prefix = list(prefix)
        self.env = env or {}
        self.args = list(args)
        self.media = media
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        cmd = [*self.prefix, sys.executable, "-m", "backupplus.cli", "serve", "--host", self.host,
               "--port", str(self.port), *self.args]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        if not self.media:
            cmd.append("--no-media")
        return cmd

    def start(self, timeout: float = 30.0, *, wait: bool = True) -> Self:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
        # the chaos loads admit from one link far faster than people join a meeting: no rate limit
        env.update({"BACKUPPLUS_OPERATOR_TOKENS": OPERATOR, "BACKUPPLUS_LOG_LEVEL": "INFO",
                    "BACKUPPLUS_PUBLIC_URL": self.base_url, "BACKUPPLUS_ADMISSION_RATE_BURST": "100000",
                    # no private turnserver unless a test asks (the fault tests are about Redis and the
                    # ledger; and libfaketime's nanosleep answers EINVAL to its start-up wait)
                    "BACKUPPLUS_TURN": "false",
                    "BACKUPPLUS_MEDIA_REMOTE_CANDIDATES": "loopback",  # clients on this machine
                    **self.env})
        with open(self.log_path, "ab") as log:
            # a process group of its own: a prefix (faketime, ip netns exec) may not pass signals on, and
            # every process of the broker must go when the test stops it
            self.process = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}: {self.log()[-2000:]}")
            if self.healthz() == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"broker not healthy within {timeout:.0f} s: {self.log()[-2000:]}")

    def healthz(self) -> int | None:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal(self, sig: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """kill -9 (of the broker and anything its prefix runs it in)."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM (drain), then the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        self._signal(signal.SIGKILL)  # whatever of its group outlived it (a prefix's child)


def start_all(brokers: Sequence[BrokerProcess], timeout: float = 60.0) -> list[BrokerProcess]:
    """Starts the brokers side by side (their start-up is mostly imports) and waits for each."""
    started = []
    try:
        for b in brokers:
            started.append(b.start(wait=False))
        for b in brokers:
            b.wait_healthy(timeout)
    except BaseException:
        for b in started:
            b.stop()
        raise
    return list(brokers)
