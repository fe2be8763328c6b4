"""TURN: the credentials handed out, checked by a real coturn (accepted; expired or forged refused), the
peers coturn relays to (media nodes only: loopback and private addresses refused), its hardened
configuration, the admission answer's ice_servers, and --turn-url validation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from pydantic import ValidationError

from backupplus.cli import main as cli_main
from broker.turn import TurnService, credentials, derive_turn_secret, expiry, ice_servers
from infra.redisproc import free_port
from infra.settings import Settings, parse_turn_url
from infra.turnproc import PrivateTurn, TurnConfig, TurnServer, turnserver_binary
from tests.api_helpers import AUTH, api_client, new_conference, open_outage
from tests.broker_process import stop_process

pytestmark = pytest.mark.skipif(turnserver_binary() is None, reason="coturn is not installed (make setup)")

SECRET = "test-turn-secret-0123456789"
MEDIA_NODE = "127.0.0.2"  # the one peer this coturn may relay to (a media node on loopback, as in tests)


@pytest.fixture(scope="module")
def coturn() -> Iterator[TurnServer]:
    server = TurnServer(TurnConfig(secret=SECRET, port=0, tls_port=0, allowed_peers=[MEDIA_NODE]))
    with server:
        yield server


class _Sink:
    """The protocol behind a TURN endpoint: datagrams relayed back to us."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def connection_made(self, transport: Any) -> None:
        pass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    return context


async def _allocate(server: TurnServer, username: str, password: str, transport: str = "udp") -> Any:
    turn, _ = await _endpoint(server, username, password, transport)
    return turn


async def _endpoint(server: TurnServer, username: str, password: str, transport: str = "udp") -> tuple[Any, _Sink]:
    port = server.config.tls_port if transport == "tls" else server.config.port
    return await asyncio.wait_for(create_turn_endpoint(
        _Sink, (server.host, port), username, password,
        ssl=_no_verify() if transport == "tls" else None, transport="udp" if transport == "udp" else "tcp",
    ), 10)


def _fresh(pid: str = "p-test") -> tuple[str, str]:
    return credentials(SECRET, pid, int(time.time()) + 3600)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_coturn_accepts_the_credentials_over_every_transport(coturn: TurnServer, transport: str) -> None:
    turn = await _allocate(coturn, *_fresh(), transport=transport)
    try:
        relayed = turn.get_extra_info("sockname")
        assert relayed[0] == coturn.host and relayed[1] > 0
    finally:
        turn.close()


async def test_coturn_refuses_expired_credentials(coturn: TurnServer) -> None:
    username, password = credentials(SECRET, "p-test", int(time.time()) - 5)
    with pytest.raises(stun.TransactionFailed) as refused:
        await _allocate(coturn, username, password)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401


@pytest.mark.parametrize("forgery", ["other secret", "other participant", "later expiry"])
async def test_coturn_refuses_forged_credentials(coturn: TurnServer, forgery: str) -> None:
    expires = int(time.time()) + 3600
    username, password = credentials(SECRET, "p-real", expires)
    if forgery == "other secret":
        username, password = credentials("not-the-secret", "p-real", expires)
    elif forgery == "other participant":
        username = f"{expires}:p-someone-else"
    else:
        username = f"{expires + 86400}:p-real"
    with pytest.raises(stun.TransactionFailed) as refused:
        await _allocate(coturn, username, password)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.20", "169.254.1.1",
                                  "100.64.0.1", "203.0.113.7"])
async def test_coturn_refuses_peers_that_are_not_media_nodes(coturn: TurnServer, peer: str) -> None:
    """Loopback, private, link-local, shared and public addresses alike: only media nodes are peers."""
    turn = await _allocate(coturn, *_fresh())
    try:
        with pytest.raises(stun.TransactionFailed) as refused:
            await turn._TurnTransport__inner_protocol.channel_bind(0x4000, (peer, 9))
        assert refused.value.response.attributes["ERROR-CODE"][0] == 403
    finally:
        turn.close()


async def test_coturn_relays_to_a_media_node(coturn: TurnServer) -> None:
    """The allowed peer (a UDP socket standing for a media node on loopback) gets what the client sends
    through the relay, and its answer comes back."""
    loop = asyncio.get_running_loop()
    node = _Sink()
    node_transport, _ = await loop.create_datagram_endpoint(lambda: node, local_addr=(MEDIA_NODE, 0))
    turn, sink = await _endpoint(coturn, *_fresh(), transport="tcp")
    try:
        node_addr = node_transport.get_extra_info("sockname")
        turn.sendto(b"hello media node", node_addr)
        data, relay_addr = await asyncio.wait_for(node.received.get(), 5)
        assert data == b"hello media node"
        assert relay_addr[0] == coturn.host
        node_transport.sendto(b"hello participant", relay_addr)
        back, _ = await asyncio.wait_for(sink.received.get(), 5)
        assert back == b"hello participant"
    finally:
        turn.close()
        node_transport.close()


def test_the_configuration_is_hardened(coturn: TurnServer) -> None:
    conf = (coturn.data_dir / "turnserver.conf").read_text().splitlines()
    for line in ("use-auth-secret", "fingerprint", "no-cli", "no-multicast-peers", "no-tcp-relay",
                 "denied-peer-ip=0.0.0.0-255.255.255.255", f"allowed-peer-ip={MEDIA_NODE}"):
        assert line in conf
    assert any(line.startswith("user-quota=") for line in conf)
    assert any(line.startswith("total-quota=") for line in conf)
    assert (coturn.data_dir / "turnserver.conf").stat().st_mode & 0o077 == 0  # it holds the secret
    assert SECRET not in " ".join(coturn.process.args if coturn.process else [])  # type: ignore[arg-type]


# --- credentials and ice_servers ------------------------------------------------------------------
def test_credentials_follow_the_turn_rest_scheme() -> None:
    username, password = credentials("s", "p-1", 1_900_000_000)
    assert username == "1900000000:p-1"
    assert password == base64.b64encode(hmac.new(b"s", username.encode(), hashlib.sha1).digest()).decode()


def test_credentials_last_twelve_hours_but_never_past_a_planned_end() -> None:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert expiry(now, 12 * 3600, None) == int((now + timedelta(hours=12)).timestamp())
    planned = now + timedelta(hours=2)
    assert expiry(now, 12 * 3600, planned) == int(planned.timestamp())
    service = TurnService(urls=("turn:t:3478?transport=udp",), secret="s", mode="external")
    (server,) = ice_servers(service, "p-1", now, planned)
    assert server["username"] == f"{int(planned.timestamp())}:p-1"
    assert ice_servers(TurnService(), "p-1", now) == []


def test_the_private_secret_is_derived_from_the_root_secret() -> None:
    assert derive_turn_secret(b"root") == derive_turn_secret(b"root")
    assert derive_turn_secret(b"root") != derive_turn_secret(b"other root")
    assert derive_turn_secret(b"root") != hmac.new(b"root", b"", hashlib.sha256).hexdigest()


async def test_admissions_hand_out_credentials_coturn_accepts_and_never_the_secret(
    coturn: TurnServer, redis_url: str, redis: Any
) -> None:
    urls = tuple(coturn.urls())
    async with api_client(redis_url, turn_urls=urls, turn_secret=SECRET) as client:
        outage = await open_outage(client)
        conference = await new_conference(client, outage["id"])
        r = await client.post(f"/v1/conferences/{conference['id']}/participants",
                              json={"display_name": "Ada", "kind": "video"},
                              headers={"Authorization": f"Bearer {conference['join_token']}"})
        assert r.status == 201
        answer = await r.json()
        (server,) = answer["ice_servers"]
        assert server["urls"] == list(urls)
        expires, pid = server["username"].split(":", 1)
        assert pid == answer["id"]
        assert int(expires) >= time.time() + 12 * 3600 - 60
        turn = await _allocate(coturn, server["username"], server["credential"], transport="tcp")
        turn.close()
        texts = [await r.text()]
        for path in ("/readyz", "/openapi.json", f"/v1/outages/{outage['id']}", f"/v1/participants/{answer['id']}",
                     "/v1/sla?reported_at=2026-11-30T10:00:00%2B01:00&priority=urgent", "/metrics"):
            texts.append(await (await client.get(path, headers=AUTH)).text())
        assert not any(SECRET in text for text in texts)


# --- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["turn:turn.example.com:443?transport=tcp", "turns:turn.example.com:443",
                                 "turn:192.0.2.1", "turn:[2001:db8::1]:3478?transport=udp"])
def test_turn_urls_parse(url: str) -> None:
    scheme, host, port, transport = parse_turn_url(url)
    assert scheme in ("turn", "turns") and host and port and transport in ("udp", "tcp")


@pytest.mark.parametrize("url", ["http://turn.example.com", "turn:", "turn:host:99999", "turns:h:443?transport=udp",
                                 "turn:host:3478?transport=sctp", "stun:host:3478"])
def test_a_bad_turn_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="TURN URL"):
        Settings.from_env(turn_urls=(url,), turn_secret="s")


def test_turn_urls_need_their_secret() -> None:
    with pytest.raises(ValidationError, match="turn-secret"):
        Settings.from_env(turn_urls=("turn:h:3478",))


def test_serve_stops_on_a_bad_turn_url_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--turn-url", "turn:bad host", "--turn-secret", "s"]) == 2
    err = capsys.readouterr().err
    assert "cannot parse TURN URL" in err and "turn:bad host" in err


# --- serve and its private turnserver -----------------------------------------------------------------
def _serve(redis_url: str, workdir: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    env.update(BACKUPPLUS_OPERATOR_TOKENS="bpo_turn-serve-test-token-0123456789ab", BACKUPPLUS_TURN_PORT="0", BACKUPPLUS_TURN_TLS_PORT="0",
               **env_extra)
    log = workdir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backupplus.cli", "serve", "--redis-url", redis_url, "--port", str(port),
             "--state-dir", str(workdir / "state")],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc, base, log


def _readyz_turn(base: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
                return dict(json.loads(resp.read())["turn"])
        except urllib.error.HTTPError:  # 503 until the in-process media node has registered
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_serve_owns_its_turnserver_and_stops_it(redis_url: str, tmp_path: Path) -> None:
    proc, base, log = _serve(redis_url, tmp_path, {})
    try:
        pid = int((tmp_path / "state" / "turn" / "turnserver.pid").read_text().split()[0])
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"turnserver")
        assert "turn: started a private turnserver (coturn)" in log.read_text()
        assert _readyz_turn(base)["mode"] == "private"
        conf = (tmp_path / "state" / "turn" / "turnserver.conf").read_text()
        assert "allowed-peer-ip=" in conf and "static-auth-secret=" in conf
    finally:
        stop_process(proc)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and b"turnserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the turnserver outlived serve"
        time.sleep(0.05)


def test_without_coturn_serve_says_how_to_install_it_and_runs_direct_only(redis_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc, base, log = _serve(redis_url, tmp_path, {"PATH": str(empty)})
    try:
        assert "coturn is not installed" in log.read_text() and "apt-get install coturn" in log.read_text()
        turn = _readyz_turn(base)  # ready: direct UDP still works
        assert turn["mode"] == "none" and turn["urls"] == []
        assert "apt-get install coturn" in turn["detail"] and "direct UDP only" in turn["detail"]
    finally:
        stop_process(proc)
    assert not (tmp_path / "state" / "turn" / "turnserver.pid").exists()


def test_the_private_turnserver_is_restarted_when_it_dies(tmp_path: Path) -> None:
    private = PrivateTurn(TurnConfig(secret=SECRET, port=0, tls_port=0, allowed_peers=[MEDIA_NODE]), tmp_path,
                          poll_s=0.05).start()

    async def kill_and_watch() -> None:
        watcher = asyncio.create_task(private.supervise())
        first = private.server.process
        assert first is not None and private.health() is None
        first.kill()
        first.wait(5)
        assert private.health() is not None  # said at once, before the supervisor's next look
        deadline = time.monotonic() + 10
        while private.health() is not None or private.server.process is first:
            assert time.monotonic() < deadline, private.health()
            await asyncio.sleep(0.05)
        assert private.server.listening()
        watcher.cancel()

    try:
        asyncio.run(kill_and_watch())
    finally:
        private.stop()
