"""The join page reconnects by itself when its media node dies (standalone nodes, killed for real)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.redisproc import RedisServer, free_port
from tests.broker_process import stop_process
from tests.test_pages_browser import (  # noqa: F401 - fixtures
    FRAMES_JS,
    OPERATOR,
    Api,
    Pages,
    _contract,
    _state,
    browser,
    pages,
)

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.slow, pytest.mark.timeout(150)]


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "backupplus.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, grace_s=15)


def _ready(base: str, log: Path, proc: subprocess.Popen[bytes], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.fixture
def split(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A broker without media plus one standalone media node; start_node() adds another."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    env["BACKUPPLUS_OPERATOR_TOKENS"] = OPERATOR
    env["BACKUPPLUS_MEDIA_REMOTE_CANDIDATES"] = "loopback"  # the browser is on this machine
    procs: list[subprocess.Popen[bytes]] = []

    def start_node(name: str) -> subprocess.Popen[bytes]:
        port = free_port()
        proc = _spawn(
            [
                "media",
                "--redis-url",
                redis_server.url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--drain-timeout",
                "1",
            ],
            tmp_path / f"{name}.log",
            env,
        )
        procs.append(proc)
        return proc

    port = free_port()
    serve = _spawn(
        ["serve", "--no-media", "--redis-url", redis_server.url, "--port", str(port),
         "--state-dir", str(tmp_path / "state")],
        tmp_path / "serve.log",
        env,
    )
    procs.append(serve)
    node_a = start_node("node-a")
    base = f"http://127.0.0.1:{port}"
    try:
        _ready(base, tmp_path / "serve.log", serve)
        yield {"api": Api(base), "node_a": node_a, "start_node": start_node, "logs": tmp_path}
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_page_reconnects_when_its_media_node_dies(split: dict[str, Any], pages: Pages) -> None:  # noqa: F811
    api: Api = split["api"]
    number, serial = _contract(api)
    outage = api.ok(
        "POST",
        "/v1/outages",
        {"contract": number, "serial": serial,
         "ticket": {"priority": "urgent", "site": "s", "contact": "c", "description": "d"}},
    )
    conf = api.ok("POST", f"/v1/outages/{outage['id']}/conferences", {"title": "Failover"})
    page = pages.open(conf["join_url"] + "?name=Ivy&kind=video&autojoin=1")
    _state(page, "connected")
    page.wait_for_selector("body[data-first-frame]", state="attached", timeout=15000)

    split["node_a"].send_signal(signal.SIGKILL)  # the node dies without a word
    split["node_a"].wait(5)
    split["start_node"]("node-b")
    killed = time.monotonic()
    _state(page, "joining", timeout=30)  # noticed the loss
    _state(page, "connected", timeout=60)  # and came back on its own
    back_after = time.monotonic() - killed
    info = page.evaluate(FRAMES_JS)
    assert 0 < info["height"] <= 480 and info["frames"] >= 5, info
    doc = api.ok("GET", f"/v1/conferences/{conf['id']}")
    assert [p["display_name"] for p in doc["participants"]] == ["Ivy"]
    print(f"reconnected {back_after:.1f} s after the media node was killed")
    api.call("POST", f"/v1/outages/{outage['id']}/restore")
