"""The join page through TURN in headless Chromium, against a real `backupplus serve` and its private
coturn: with iceTransportPolicy "relay" (`?ice=relay`) and only a turn:…?transport=tcp or only a
turns: URL, the selected candidate pair's local candidate is a relay reached over TCP or TLS, and video
of at most 480 lines arrives. An ICE restart on the same peer connection keeps the participant.

Which URLs the page keeps is chosen by an init script wrapping RTCPeerConnection (it also records the
page's peer connections for getStats); the page itself is unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from infra.redisproc import RedisServer, free_port
from infra.turnproc import turnserver_binary
from tests.broker_process import stop_process
from tests.chromium import CHROMIUM_ARGS, require_chromium

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser, pytest.mark.media, pytest.mark.timeout(120),
    pytest.mark.skipif(turnserver_binary() is None, reason="coturn is not installed (make setup)"),
]

OPERATOR = "bpo_turn-browser-test-token-0123456789"


def _call(base: str, method: str, path: str, body: Any = None, token: str = OPERATOR) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """serve with its private turnserver on free ports: {"base", "turn": /readyz's turn}."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    env.update(BACKUPPLUS_OPERATOR_TOKENS=OPERATOR, BACKUPPLUS_ADMISSION_RATE_BURST="1000",
               BACKUPPLUS_TURN_PORT="0", BACKUPPLUS_TURN_TLS_PORT="0",
               BACKUPPLUS_MEDIA_REMOTE_CANDIDATES="loopback")  # the relays are on this machine
    workdir = tmp_path_factory.mktemp("serve-turn")
    log = workdir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backupplus.cli", "serve", "--redis-url", redis_server.url, "--port", str(port),
             "--state-dir", str(workdir / "state")],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                    ready = json.loads(resp.read())
                    break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "serve not ready:\n" + log.read_text()
            time.sleep(0.2)
        assert ready["turn"]["mode"] == "private", ready
        yield {"base": base, "turn": ready["turn"], "log": log}
    finally:
        stop_process(proc)


@pytest.fixture
def conference(server: dict[str, Any]) -> Iterator[dict[str, Any]]:
    base = server["base"]
    today = date.today()
    number = f"TB-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    _call(base, "PUT", f"/v1/contracts/{number}", {
        "number": number, "client": {"company": "Firewalled SA"}, "start_date": str(today - timedelta(days=30)),
        "term_years": 3, "status": "active",
        "equipment": [{"serial": f"{number}-MCU", "brand": "Poly", "model": "RMX 1800", "kind": "video_bridge",
                       "warranty_until": str(today + timedelta(days=400))}],
    })
    outage = _call(base, "POST", "/v1/outages", {
        "contract": number, "serial": f"{number}-MCU",
        "ticket": {"priority": "urgent", "site": "Aix", "contact": "M. Test", "description": "bridge down"},
    })
    conf = _call(base, "POST", f"/v1/outages/{outage['id']}/conferences", {"title": "Behind the firewall"})
    yield {"outage": outage["id"], **conf}
    _call(base, "POST", f"/v1/outages/{outage['id']}/restore")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        # the private turnserver's certificate is self-signed (a deployment gives a real one)
        b = pw.chromium.launch(executable_path=require_chromium(),
                               args=[*CHROMIUM_ARGS, "--ignore-certificate-errors"])
        yield b
        b.close()


# Keeps only the TURN URLs of one transport in every configuration the page gives, and records the
# page's peer connections (window.bpPcs) for getStats.
WRAP_PC_JS = """
(() => {
  const only = window.name || "all";
  const keep = (u) => only === "all" || (only === "tls" ? u.startsWith("turns:")
    : only === "tcp" ? u.startsWith("turn:") && u.includes("transport=tcp") : true);
  const filter = (config) => config && config.iceServers ? { ...config,
    iceServers: config.iceServers.map((s) => ({ ...s, urls: [].concat(s.urls).filter(keep) })) } : config;
  const Native = window.RTCPeerConnection;
  window.bpPcs = [];
  class Recorded extends Native {
    constructor(config) { super(filter(config)); window.bpPcs.push(this); }
    setConfiguration(config) { return super.setConfiguration(filter(config)); }
  }
  window.RTCPeerConnection = Recorded;
})();
"""

PATH_JS = """async () => {
  const pc = window.bpPcs[window.bpPcs.length - 1];
  const stats = await pc.getStats();
  let pair = null, video = null;
  stats.forEach((r) => {
    if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    if (r.type === "inbound-rtp" && r.kind === "video") video = r;
  });
  const local = pair ? stats.get(pair.localCandidateId) : null;
  const ufrag = /a=ice-ufrag:(\\S+)/.exec(pc.localDescription.sdp)[1];
  return { pcs: window.bpPcs.length, candidateType: local && local.candidateType,
           relayProtocol: local && local.relayProtocol, url: local && local.url,
           frameHeight: video && video.frameHeight, framesDecoded: video ? video.framesDecoded : 0,
           policy: pc.getConfiguration().iceTransportPolicy, ufrag,
           iceServers: pc.getConfiguration().iceServers.map((s) => s.urls) };
}"""


STORED_JS = "(id) => JSON.parse(sessionStorage.getItem('backupplus.participant.' + id))"


def _open(browser: Any, url: str, only: str) -> tuple[Any, Any]:
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.add_init_script(f"window.name = {json.dumps(only)};\n" + WRAP_PC_JS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.errors = errors
    return context, page


def _connected(page: Any, timeout_s: float = 30) -> None:
    page.wait_for_function("() => document.body.dataset.state === 'connected'", timeout=timeout_s * 1000)


def _video_arrives(page: Any, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        path = page.evaluate(PATH_JS)
        if path["framesDecoded"] >= 10 and path["frameHeight"]:
            return dict(path)
        assert time.monotonic() < deadline, path
        time.sleep(0.3)


@pytest.mark.parametrize(("only", "protocol"), [("tcp", "tcp"), ("tls", "tls")])
def test_chromium_joins_through_turn_only(
    server: dict[str, Any], conference: dict[str, Any], browser: Any, only: str, protocol: str
) -> None:
    context, page = _open(browser, conference["join_url"] + "?name=Fw&kind=video&autojoin=1&ice=relay", only)
    try:
        _connected(page)
        path = _video_arrives(page)
        assert path["policy"] == "relay"
        assert all(u.startswith("turns:" if only == "tls" else "turn:") for urls in path["iceServers"] for u in urls)
        assert path["candidateType"] == "relay", path
        assert path["relayProtocol"] == protocol, path
        assert 0 < path["frameHeight"] <= 480, path
        assert page.evaluate("() => document.body.dataset.path") == "relay"
        assert "firewall" in page.inner_text("#notice").lower()
        assert not page.errors
    finally:
        context.close()


def test_ice_restart_keeps_the_peer_connection_and_the_participant(
    server: dict[str, Any], conference: dict[str, Any], browser: Any
) -> None:
    """ICE reported failed on a connected page: it restarts ICE on the same peer connection (new ICE
    credentials) as the same participant, the server answers it, and video flows again."""
    context, page = _open(browser, conference["join_url"] + "?name=Re&kind=video&autojoin=1", "all")
    try:
        _connected(page)
        before = _video_arrives(page)
        participant = page.evaluate(STORED_JS, conference["id"])
        # ICE "failed" as the browser reports it when the path is lost
        page.evaluate("""() => {
          const pc = window.bpPcs[window.bpPcs.length - 1];
          Object.defineProperty(pc, "iceConnectionState", { get: () => "failed", configurable: true });
          pc.dispatchEvent(new Event("iceconnectionstatechange"));
          delete pc.iceConnectionState;
        }""")
        deadline = time.monotonic() + 20
        while True:
            after = page.evaluate(PATH_JS)
            if after["ufrag"] != before["ufrag"] and after["framesDecoded"] >= before["framesDecoded"] + 10:
                break
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.3)
        _connected(page)
        assert after["pcs"] == before["pcs"]  # the same peer connection
        again = page.evaluate(STORED_JS, conference["id"])
        assert again["id"] == participant["id"]
        state = _call(server["base"], "GET", f"/v1/participants/{participant['id']}")
        assert state["state"] == "connected"
        outage = _call(server["base"], "GET", f"/v1/outages/{conference['outage']}")
        assert outage["in_use"]["video"] == 1
        assert not page.errors
    finally:
        context.close()
