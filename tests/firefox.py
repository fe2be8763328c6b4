"""How the tests and benchmarks drive Debian's Firefox ESR: ``tools/browser/firefox.mjs`` (puppeteer-core
over WebDriver BiDi; no browser download) in a node process, one JSON command per line.

    with Firefox() as ff:
        page = ff.open(url)
        ff.wait(page, "() => document.body.dataset.state === 'connected'", timeout=20)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Self

FIREFOX = "/usr/bin/firefox-esr"
DRIVER = Path(__file__).resolve().parent.parent / "tools" / "browser" / "firefox.mjs"


class FirefoxError(RuntimeError):
    """The driver refused a command, or Firefox did not answer in time."""


def require_firefox() -> None:
    """A clear failure (never a silent skip) when a piece is missing."""
    if not Path(FIREFOX).exists():
        raise RuntimeError(f"{FIREFOX} is missing: `make setup-test` installs the Debian package firefox-esr")
    if shutil.which("node") is None:
        raise RuntimeError("node is missing: `make setup-test` installs the Debian package nodejs")
    if not (DRIVER.parent / "node_modules" / "puppeteer-core").exists():
        raise RuntimeError("puppeteer-core is missing: `make setup-test` runs `npm ci` in tools/browser")


class Firefox:
    """One headless Firefox ESR (fake camera and microphone); each page in its own browser context."""

    def __init__(self, start_timeout: float = 60) -> None:
        require_firefox()
        self._proc = subprocess.Popen(
            ["node", str(DRIVER), "--executable", FIREFOX],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=DRIVER.parent,
            env={**os.environ, "MOZ_HEADLESS": "1"},
            start_new_session=True,  # node and the Firefox it starts: one process group, ours to stop
        )
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next = 0
        hello = self._reply(start_timeout)
        self.version = str(hello.get("value"))

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("{"):
                self._replies.put(json.loads(line))
        self._replies.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise FirefoxError(f"no answer from Firefox within {timeout:g} s") from None
        if reply is None:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise FirefoxError(f"the Firefox driver exited: {err[-2000:]}")
        return reply

    def call(self, cmd: str, timeout: float = 30, **fields: Any) -> Any:
        self._next += 1
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"id": self._next, "cmd": cmd, **fields}) + "\n")
        self._proc.stdin.flush()
        while True:
            reply = self._reply(timeout)
            if reply.get("id") == self._next:
                break
        if not reply.get("ok"):
            raise FirefoxError(f"{cmd}: {reply.get('error')}")
        return reply.get("value")

    def open(self, url: str | None = None, init: str | None = None) -> int:
        """A new page in a fresh context; ``init`` runs in every document before the page's scripts."""
        return int(self.call("open", url=url, init=init, timeout=45))

    def eval(self, page: int, fn: str, arg: Any = None, timeout: float = 30) -> Any:
        """Calls the JavaScript function ``fn`` (its source) in the page and returns its (awaited) value."""
        return self.call("eval", page=page, fn=fn, arg=arg, timeout=timeout)

    def wait(self, page: int, fn: str, timeout: float = 20, arg: Any = None) -> Any:
        """Polls ``fn`` in the page until it returns something truthy (FirefoxError after ``timeout``)."""
        return self.call("wait", page=page, fn=fn, arg=arg, timeout=timeout + 10, wait_ms=int(timeout * 1000))

    def click(self, page: int, selector: str) -> None:
        self.call("click", page=page, selector=selector)

    def problems(self, page: int) -> list[str]:
        return list(self.call("problems", page=page))

    def close_page(self, page: int) -> None:
        self.call("close", page=page)

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        # whatever is left of the group this driver started (a Firefox content process, say)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
