"""A real ``backupplus serve`` process for tests: started on a free port against a given Redis, its
stdout and its log (stderr) kept in files, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.redisproc import free_port


@dataclass
class BrokerProcess:
    url: str
    port: int
    output: Path  # stdout (what serve prints)
    errors: Path  # stderr (the log)

    def log(self) -> str:
        return self.output.read_text(errors="replace") + self.errors.read_text(errors="replace")


@contextmanager
def running_broker(redis_url: str, workdir: Path, *, global_args: tuple[str, ...] = (),
                   serve_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                   timeout: float = 30.0) -> Iterator[BrokerProcess]:
    port = free_port()
    output, errors = workdir / f"broker-{port}.out", workdir / f"broker-{port}.log"
    command = [sys.executable, "-m", "backupplus.cli", *global_args, "serve", "--no-media",
               "--redis-url", redis_url, "--port", str(port), "--state-dir", str(workdir / "state"), *serve_args]
    with output.open("wb") as out, errors.open("wb") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, cwd=workdir)
    broker = BrokerProcess(f"http://127.0.0.1:{port}", port, output, errors)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}:\n{broker.log()}")
            try:
                with urllib.request.urlopen(f"{broker.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer within {timeout:.0f} s:\n{broker.log()}")
            time.sleep(0.1)
        yield broker
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: for the processes a test started, never any other."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

