"""A browser whose only way out is TCP to the broker and to the TURN port joins, sees the conference and
is heard: Chromium runs in a network namespace (veth pair to the host) whose nftables rules drop every
packet but TCP to those two ports (no UDP at all: neither to the media node nor to TURN's UDP port).
The page is the unchanged join page with every candidate allowed; ICE can only succeed through the
TURN server over TCP. A direct participant on the host hears and sees it. Everything the test makes
(namespace, veth, rules) is removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.redisproc import RedisServer, free_port
from infra.turnproc import free_udp_tcp_port, turnserver_binary
from tests.broker_process import stop_process
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.support.netns import ChaosNet, can_make_namespaces
from tests.test_turn_browser import PATH_JS, STORED_JS, WRAP_PC_JS, _call

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser, pytest.mark.media, pytest.mark.timeout(150),
    pytest.mark.skipif(turnserver_binary() is None, reason="coturn is not installed (make setup)"),
    pytest.mark.skipif(can_make_namespaces() is not None, reason=str(can_make_namespaces())),
]

OPERATOR = "bpo_turn-netns-test-token-0123456789ab"


def _firewall(net: ChaosNet, tcp_ports: list[int]) -> None:
    """Inside the namespace: out only TCP to the host end's ``tcp_ports`` (and what answers it). The rules
    are replaced in one transaction: no packet slips through while they change."""
    ports = ", ".join(str(p) for p in tcp_ports)
    script = (
        "table inet bpturn\n"
        "delete table inet bpturn\n"
        "table inet bpturn {\n"
        "  chain out { type filter hook output priority 0; policy drop;\n"
        '    oif "lo" accept\n'
        "    ct state established,related accept\n"
        f"    ip daddr {net.host_ip} tcp dport {{ {ports} }} accept\n"
        "  }\n"
        "  chain inp { type filter hook input priority 0; policy drop;\n"
        '    iif "lo" accept\n'
        "    ct state established,related accept\n"
        "  }\n"
        "}\n"
    )
    subprocess.run([*net.prefix(), "nft", "-f", "-"], input=script, check=True, capture_output=True, text=True,
                   timeout=20)


def _udp_blocked(net: ChaosNet, port: int) -> bool:
    """A STUN binding request over UDP from the namespace to the TURN port gets no answer."""
    probe = (
        "import os, socket, struct\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)\n"
        "try:\n"
        f"    s.sendto(struct.pack('!HHI', 1, 0, 0x2112A442) + os.urandom(12), ('{net.host_ip}', {port}))\n"
        "    s.recvfrom(2048); print('answered')\n"
        "except OSError:  # EPERM: dropped on the way out; timeout: no answer\n"
        "    print('blocked')\n"
    )
    done = subprocess.run([*net.prefix(), sys.executable, "-c", probe], capture_output=True, text=True, timeout=20,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "blocked"


@pytest.fixture(scope="module")
def firewalled(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("turn-netns")
    with ChaosNet() as net:
        port, turn_port, tls_port = free_port(), free_udp_tcp_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
        env.update(BACKUPPLUS_OPERATOR_TOKENS=OPERATOR, BACKUPPLUS_ADMISSION_RATE_BURST="1000",
                   BACKUPPLUS_TURN_PORT=str(turn_port), BACKUPPLUS_TURN_TLS_PORT=str(tls_port),
                   BACKUPPLUS_MEDIA_REMOTE_CANDIDATES="loopback")  # the relays are on this machine
        log = workdir / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backupplus.cli", "serve", "--redis-url", redis_server.url,
                 "--host", net.host_ip, "--port", str(port), "--state-dir", str(workdir / "state")],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        base = f"http://{net.host_ip}:{port}"
        try:
            deadline = time.monotonic() + 45
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                        ready = json.loads(resp.read())
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "serve not ready:\n" + log.read_text()
                time.sleep(0.2)
            assert ready["turn"]["mode"] == "private", ready
            _firewall(net, [port, turn_port])
            # Chromium inside the namespace: playwright drives it over a pipe, not the network
            wrapper = workdir / "chromium-in-netns"
            wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {net.name} {CHROMIUM} \"$@\"\n")
            wrapper.chmod(0o755)
            yield {"base": base, "net": net, "port": port, "turn_port": turn_port, "wrapper": wrapper, "log": log}
        finally:
            stop_process(proc)


def _conference(base: str) -> dict[str, Any]:
    from datetime import date, timedelta

    today = date.today()
    number = f"NS-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    _call(base, "PUT", f"/v1/contracts/{number}", {
        "number": number, "client": {"company": "Firewalled SA"}, "start_date": str(today - timedelta(days=30)),
        "term_years": 3, "status": "active",
        "equipment": [{"serial": f"{number}-MCU", "brand": "Poly", "model": "RMX 1800", "kind": "video_bridge",
                       "warranty_until": str(today + timedelta(days=400))}],
    }, token=OPERATOR)
    outage = _call(base, "POST", "/v1/outages", {
        "contract": number, "serial": f"{number}-MCU",
        "ticket": {"priority": "urgent", "site": "Aix", "contact": "M. Test", "description": "bridge down"},
    }, token=OPERATOR)
    conf = _call(base, "POST", f"/v1/outages/{outage['id']}/conferences", {"title": "Only 443"}, token=OPERATOR)
    return {"outage": outage["id"], **conf}


AUDIO_SENT_JS = """async () => {
  const pc = window.bpPcs[window.bpPcs.length - 1];
  const out = { packetsSent: 0, reportedBack: false };
  (await pc.getStats()).forEach((r) => {
    if (r.type === "outbound-rtp" && r.kind === "audio") out.packetsSent = r.packetsSent;
    if (r.type === "remote-inbound-rtp" && r.kind === "audio" && r.roundTripTime !== undefined) out.reportedBack = true;
  });
  return out;
}"""
AUDIO_RECEIVED_JS = """async () => {
  const pc = window.bpPcs[window.bpPcs.length - 1];
  let packets = 0;
  (await pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "audio") packets = r.packetsReceived; });
  return packets;
}"""


def _launch(pw: Any, executable: str | Path, base: str) -> Any:
    # the broker is on the veth address over plain HTTP: camera and microphone need a secure origin
    return pw.chromium.launch(executable_path=str(executable), args=[
        *CHROMIUM_ARGS, "--ignore-certificate-errors", f"--unsafely-treat-insecure-origin-as-secure={base}"])


def test_a_browser_that_can_only_reach_tcp_ports_joins_through_turn(firewalled: dict[str, Any]) -> None:
    require_chromium()
    base, net = firewalled["base"], firewalled["net"]
    assert _udp_blocked(net, firewalled["turn_port"])
    conf = _conference(base)
    with playwright_sync.sync_playwright() as pw:
        inside, outside = _launch(pw, firewalled["wrapper"], base), _launch(pw, require_chromium(), base)
        try:
            pages = {}
            for name, browser in (("inside", inside), ("outside", outside)):
                page = browser.new_context(locale="en-GB").new_page()
                page.add_init_script("window.name = 'all';\n" + WRAP_PC_JS)
                page.goto(conf["join_url"] + f"?name={name}&kind=video&autojoin=1")
                pages[name] = page
            for page in pages.values():
                page.wait_for_function("() => document.body.dataset.state === 'connected'", timeout=40_000)
            deadline = time.monotonic() + 30
            while True:
                got = {name: page.evaluate(PATH_JS) for name, page in pages.items()}
                if all(g["framesDecoded"] >= 10 for g in got.values()):
                    break
                assert time.monotonic() < deadline, got
                time.sleep(0.5)
            inside_path = got["inside"]
            assert inside_path["policy"] == "all"  # every candidate was allowed: only TURN over TCP worked
            assert inside_path["candidateType"] == "relay", inside_path
            assert inside_path["relayProtocol"] in ("tcp", "tls"), inside_path
            assert 0 < inside_path["frameHeight"] <= 480
            assert got["outside"]["candidateType"] != "relay", got["outside"]
            # heard: the media node receives the firewalled participant's audio (and the direct one's)
            pid = pages["inside"].evaluate(STORED_JS, conf["id"])["id"]
            assert _call(base, "GET", f"/v1/participants/{pid}", token=OPERATOR)["state"] == "connected"
            # heard: the media node reports (RTCP) receiving the firewalled page's audio, and the direct
            # page receives the conference's mix
            heard_by = time.monotonic() + 15  # the node's receiver reports come every few seconds
            while not (sent := pages["inside"].evaluate(AUDIO_SENT_JS))["reportedBack"]:
                assert time.monotonic() < heard_by, sent
                time.sleep(0.5)
            assert sent["packetsSent"] > 0, sent
            assert pages["outside"].evaluate(AUDIO_RECEIVED_JS) > 0
            assert pages["inside"].evaluate(AUDIO_RECEIVED_JS) > 0
            metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            assert 'backupplus_media_sessions{path="relay"} 1.0' in metrics
            assert 'backupplus_media_sessions{path="direct"} 1.0' in metrics
        finally:
            inside.close()
            outside.close()
            _call(base, "POST", f"/v1/outages/{conf['outage']}/restore", token=OPERATOR)


@pytest.mark.slow
def test_a_page_whose_attempt_failed_retries_through_turn_only(firewalled: dict[str, Any]) -> None:
    """TURN unreachable at first too (only the broker's port is open): the attempt over every candidate
    fails, the page restarts ICE with iceTransportPolicy "relay" on the same peer connection, as the same
    participant, and says it connects through the company firewall; once TCP to the TURN port is let
    through it connects through the relay."""
    require_chromium()
    base, net = firewalled["base"], firewalled["net"]
    conf = _conference(base)
    _firewall(net, [firewalled["port"]])
    try:
        with playwright_sync.sync_playwright() as pw:
            inside = _launch(pw, firewalled["wrapper"], base)
            try:
                page = inside.new_context(locale="en-GB").new_page()
                page.add_init_script("window.name = 'all';\n" + WRAP_PC_JS)
                page.goto(conf["join_url"] + "?name=Late&kind=video&autojoin=1")
                page.wait_for_function("() => document.body.dataset.state === 'joining'", timeout=20_000)
                first = page.evaluate(STORED_JS, conf["id"])
                page.wait_for_function("() => /company firewall/.test(document.getElementById('status').textContent)",
                                       timeout=30_000)
                assert page.evaluate("() => window.bpPcs[window.bpPcs.length - 1].getConfiguration()"
                                     ".iceTransportPolicy") == "relay"
                _firewall(net, [firewalled["port"], firewalled["turn_port"]])
                page.wait_for_function("() => document.body.dataset.state === 'connected'", timeout=40_000)
                path = page.evaluate(PATH_JS)
                assert path["pcs"] == 1  # ICE restarts on the one peer connection
                assert path["candidateType"] == "relay" and path["relayProtocol"] == "tcp", path
                assert page.evaluate(STORED_JS, conf["id"])["id"] == first["id"]  # not admitted again
                page.wait_for_function("() => /company firewall/.test(document.getElementById('notice').textContent)",
                                       timeout=10_000)
            finally:
                inside.close()
    finally:
        _firewall(net, [firewalled["port"], firewalled["turn_port"]])
        _call(base, "POST", f"/v1/outages/{conf['outage']}/restore", token=OPERATOR)
