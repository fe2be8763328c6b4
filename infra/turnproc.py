"""coturn ``turnserver`` child processes: ``TurnServer`` (one process, for tests and benchmarks too) and
``PrivateTurn``, the supervised one that ``serve`` owns when no external TURN server is configured.

The configuration is written at each start into a 0600 file (the shared secret is never on a command
line): TURN REST credentials only (``use-auth-secret``), fingerprints, no CLI, no multicast peers,
no TCP relay endpoints, per-user and total allocation quotas, and peers limited to the media nodes'
addresses: every address is denied (so private, loopback and link-local ones: the TURN server cannot
reach the clients' or the provider's internal network) and only the media nodes' are allowed.
TLS uses the certificate and key given, or a self-signed pair made at start (``cryptography``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from .redisproc import _child_setup, _exit_text, free_port, stop_child

log = logging.getLogger("backupplus.turnproc")

INSTALL_HINT = (
    "coturn is not installed: run `make setup` (installs the Debian package coturn) or "
    "`sudo apt-get install coturn`; meanwhile participants connect over direct UDP only"
)
# Every IPv4 and IPv6 address: denied, then the media nodes' addresses allowed (coturn checks the
# allowed list first). Loopback peers need coturn's allow-loopback-peers besides, given only when a
# media node is on loopback (tests).
DENY_ALL = ("0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


class TurnServerError(RuntimeError):
    """turnserver is missing or did not come up."""


class TurnServerMissing(TurnServerError):
    """The coturn package is not installed."""


def turnserver_binary() -> str | None:
    return shutil.which("turnserver")


def free_udp_tcp_port() -> int:
    """A port free for both TCP and UDP on loopback (coturn listens on both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise TurnServerError("no free port for both TCP and UDP")


def _port_free(host: str | None, port: int, *, udp: bool) -> bool:
    """Whether ``port`` can be bound on ``host`` (every interface for None) over TCP, and UDP too."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    for kind in kinds:
        with socket.socket(family, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host or "", port))
            except OSError:
                return False
    return True


def local_addresses() -> list[str]:
    """This machine's interface addresses (IPv4 and global IPv6): where an in-process media node is."""
    import ifaddr  # aioice's own dependency: the addresses aioice gathers its host candidates from

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            with contextlib.suppress(ValueError):
                parsed = ipaddress.ip_address(address)
                if parsed.version == 6 and parsed.is_link_local:
                    continue
                if str(parsed) not in found:
                    found.append(str(parsed))
    return found


def self_signed(cert_path: Path, key_path: Path, names: Iterable[str], days: int = 30) -> None:
    """A self-signed certificate for ``names`` (host names or IP addresses), key 0600: for tests and the
    demo. Browsers check a turns: server's certificate, so a deployment gives --turn-cert/--turn-key
    (docs/TURN.md)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backupplus turn (self-signed)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class TurnConfig:
    """What the turnserver is started with. ``listen_ip`` None: every interface. Port 0: a free one."""

    secret: str
    listen_ip: str | None = "127.0.0.1"
    port: int = 3478  # TURN over UDP and TCP
    tls_port: int = 5349  # TURN over TLS (turns:)
    allowed_peers: Sequence[str] = ()
    external_ip: str | None = None  # 1:1 NAT: the public address coturn advertises for its relays
    cert: Path | None = None
    key: Path | None = None
    cert_names: Sequence[str] = ()  # names in the self-signed certificate (default: listen_ip)
    realm: str = "backupplus"
    user_quota: int = 12  # allocations per username (one participant: one per TURN URL, a few restarts)
    total_quota: int = 1000
    max_allocate_lifetime_s: int = 3600
    min_relay_port: int = 49152
    max_relay_port: int = 65535
    extra: list[str] = field(default_factory=list)

    def lines(self, cert: Path, key: Path, log_file: Path, pid_file: Path) -> list[str]:
        out = [
            "# written by backupplus at each start; do not edit (see infra/turnproc.py)",
            f"listening-port={self.port}",
            f"tls-listening-port={self.tls_port}",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={self.realm}",
            "fingerprint",
            "no-cli",
            "no-multicast-peers",
            "no-tcp-relay",
            "no-dtls",
            "no-rfc5780",
            "no-stun-backward-compatibility",
            "no-software-attribute",
            "no-tlsv1",
            "no-tlsv1_1",
            "stale-nonce=600",
            f"user-quota={self.user_quota}",
            f"total-quota={self.total_quota}",
            f"max-allocate-lifetime={self.max_allocate_lifetime_s}",
            f"min-port={self.min_relay_port}",
            f"max-port={self.max_relay_port}",
            f"cert={cert}",
            f"pkey={key}",
            f"log-file={log_file}",
            "simple-log",
            "no-stdout-log",
            f"pidfile={pid_file}",
            f"userdb={pid_file.parent / 'turndb'}",  # its own (unused) user database, not /var/lib/turn's
        ]
        if self.listen_ip:
            out += [f"listening-ip={self.listen_ip}", f"relay-ip={self.listen_ip}"]
        if self.external_ip:
            out.append(f"external-ip={self.external_ip}")
        out += [f"denied-peer-ip={r}" for r in DENY_ALL]
        out += [f"allowed-peer-ip={ip}" for ip in self.allowed_peers]
        if any(ipaddress.ip_address(ip.split("-")[0]).is_loopback for ip in self.allowed_peers):
            out.append("allow-loopback-peers")  # still denied unless allowed-peer-ip lists them
        out += self.extra
        return out


class TurnServer:
    """Starts ``turnserver`` with a written configuration in ``data_dir`` (a temporary one by default) and
    stops it. Start it from a thread that lives as long as it should: it gets SIGTERM when that thread
    ends."""

    def __init__(self, config: TurnConfig, data_dir: Path | None = None) -> None:
        self.config = config
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="backupplus-turn-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir).resolve()
        # Port 0, or a port already taken (a second serve on the machine, a system coturn): a free one.
        # Clients get the URLs with the ports in use, so nothing else needs to know.
        if config.port == 0 or not _port_free(config.listen_ip, config.port, udp=True):
            if config.port:
                log.warning("TURN port %d is in use: the private turnserver takes a free port", config.port)
            config.port = free_udp_tcp_port()
        if config.tls_port == 0 or not _port_free(config.listen_ip, config.tls_port, udp=False):
            if config.tls_port:
                log.warning("TURN TLS port %d is in use: the private turnserver takes a free port", config.tls_port)
            config.tls_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return self.config.listen_ip or "127.0.0.1"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "turnserver.log"

    @property
    def cert_file(self) -> Path:
        return self.config.cert or self.data_dir / "turn-cert.pem"

    def urls(self, host: str | None = None) -> list[str]:
        """The RTCIceServer URLs of this server as clients reach it (``host``: its public name)."""
        h = host or self.host
        h = f"[{h}]" if ":" in h else h
        c = self.config
        return [f"turn:{h}:{c.port}?transport=udp", f"turn:{h}:{c.port}?transport=tcp",
                f"turns:{h}:{c.tls_port}?transport=tcp"]

    def _write_config(self) -> Path:
        c = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert, key = c.cert, c.key
        if cert is None or key is None:
            cert, key = self.data_dir / "turn-cert.pem", self.data_dir / "turn-key.pem"
            self_signed(cert, key, list(c.cert_names) or [self.host, "localhost"])
        conf = self.data_dir / "turnserver.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(c.lines(cert, key, self.log_file, self.data_dir / "turnserver.pid")) + "\n")
        os.chmod(conf, 0o600)
        return conf

    def spawn(self) -> subprocess.Popen[bytes]:
        binary = turnserver_binary()
        if binary is None:
            raise TurnServerMissing(INSTALL_HINT)
        conf = self._write_config()
        self.process = subprocess.Popen(
            [binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),  # noqa: PLW1509 - see infra.redisproc._child_setup
        )
        return self.process

    def listening(self, timeout: float = 0.2) -> bool:
        """Both TCP listeners accept (the UDP one is opened with them)."""
        for port in (self.config.port, self.config.tls_port):
            try:
                with socket.create_connection((self.host, port), timeout=timeout):
                    pass
            except OSError:
                return False
        return True

    def wait_ready(self, timeout: float = 10.0) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise TurnServerError(f"turnserver exited ({code}); see {self.log_file}")
            if self.listening():
                return self
            time.sleep(0.05)
        self.stop()
        raise TurnServerError(f"turnserver did not listen on ports {self.config.port}/{self.config.tls_port} "
                              f"within {timeout:.0f} s; see {self.log_file}")

    def start(self, timeout: float = 10.0) -> Self:
        self.spawn()
        return self.wait_ready(timeout)

    def stop(self) -> None:
        stop_child(self.process)
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivateTurn:
    """``serve``'s own turnserver, its files under ``state_dir/turn``: ``start`` it, ``supervise`` it (a
    dead one is restarted on the same ports, up to ``restarts`` times a window, then left down: media goes
    on over direct paths), ``health`` says why it is not serving (None when it is), ``stop`` ends it."""

    def __init__(self, config: TurnConfig, state_dir: Path, *, restarts: int = 5, restart_window_s: float = 60.0,
                 poll_s: float = 0.5) -> None:
        self.server = TurnServer(config, Path(state_dir) / "turn")
        self.restarts = restarts
        self.restart_window_s = restart_window_s
        self.poll_s = poll_s
        self._down: str | None = "not started"
        self._deaths: collections.deque[float] = collections.deque()

    def start(self) -> Self:
        self.server.start()
        self._down = None
        return self

    def stop(self) -> None:
        self._down = "stopped"
        self.server.stop()

    def health(self) -> str | None:
        process = self.server.process
        if self._down is None and process is not None and process.poll() is not None:
            return f"the private turnserver exited ({_exit_text(process.returncode)})"
        return self._down

    async def supervise(self, on_give_up: Callable[[str], None] | None = None) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            process = self.server.process
            if process is None:
                return
            code = process.poll()
            if code is None:
                continue
            log.error("private turnserver exited: %s; see %s", _exit_text(code), self.server.log_file)
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - self.restart_window_s:
                self._deaths.popleft()
            if len(self._deaths) > self.restarts:
                self._down = "the private turnserver keeps dying; participants connect over direct paths only"
                if on_give_up is not None:
                    on_give_up(self._down)
                return
            self._down = f"the private turnserver exited ({_exit_text(code)}); restarting it"
            try:
                self.server.spawn()
                await asyncio.to_thread(self.server.wait_ready, 10.0)
            except TurnServerError as exc:
                log.error("private turnserver did not come back: %s", exc)
                continue
            self._down = None
            log.warning("private turnserver restarted (pid %s)", self.server.process and self.server.process.pid)
