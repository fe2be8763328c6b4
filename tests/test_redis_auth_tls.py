"""A configured --redis-url with a password, and with TLS (rediss://, mutual TLS), against real
redis-servers: requirepass, and tls-port with certificates made here (cryptography)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.redisconn import connect
from infra.redisproc import RedisServer, free_port

from .api_helpers import (
    AUTH,
    OPERATOR,
    api_client,
    contract_body,
    declare_body,
    join,
    new_conference,
    open_outage,
)
from .broker_process import running_broker


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("backupplus test CA", ca_key, _name("backupplus test CA"), ca_key, ca=True)
    out = Pki(*(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    out.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, server in ((out.server_cert, out.server_key, "redis", True),
                                            (out.client_cert, out.client_key, "broker", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(cn, key, ca_cert.subject, ca_key, server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return out


@pytest.fixture
def password() -> str:
    return "p@ss/" + secrets.token_urlsafe(16)  # characters a URL must quote


@pytest.fixture
def tls_redis(tmp_path: Path, password: str) -> Iterator[tuple[RedisServer, int, Pki]]:
    """A redis-server with requirepass and TLS (client certificates required) on ``tls_port``; its plain
    port (loopback) only serves the readiness ping of RedisServer."""
    pki = make_pki(tmp_path)
    tls_port = free_port()
    server = RedisServer(tmp_path / "data", password=password, extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
    ])
    server.start()
    try:
        yield server, tls_port, pki
    finally:
        server.stop()


def tls_url(password: str, port: int, pki: Pki, *, client_cert: bool = True) -> str:
    query = f"ssl_ca_certs={pki.ca}"
    if client_cert:
        query += f"&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
    return f"rediss://:{quote(password, safe='')}@127.0.0.1:{port}/0?{query}"


async def test_a_redis_with_a_password(tmp_path: Path, password: str) -> None:
    with RedisServer(tmp_path, password=password) as server:
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        anonymous = aioredis.Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
        try:
            with pytest.raises(aioredis.AuthenticationError):  # the server does want a password
                await anonymous.get("bp:keyring")
        finally:
            await anonymous.aclose()
        async with api_client(url) as client:
            outage = await open_outage(client)
            conf = await new_conference(client, outage["id"])
            admitted = await join(client, conf)
            assert admitted["kind"] == "audio"


async def test_a_redis_over_tls_with_a_password(tls_redis: tuple[RedisServer, int, Pki], password: str) -> None:
    _, tls_port, pki = tls_redis
    url = tls_url(password, tls_port, pki)
    client = connect(url, decode_responses=True)
    try:
        assert await client.ping()
        assert (await client.connection_pool.get_connection()).__class__.__name__ == "SSLConnection"
    finally:
        await client.aclose()
    # without a client certificate the server refuses the handshake
    refused = connect(tls_url(password, tls_port, pki, client_cert=False), policy=None)
    try:
        with pytest.raises((aioredis.ConnectionError, OSError)):
            await refused.ping()
    finally:
        await refused.aclose()
    async with api_client(url) as api:
        outage = await open_outage(api)
        conf = await new_conference(api, outage["id"])
        assert (await join(api, conf))["kind"] == "audio"


def test_serve_with_a_tls_redis_url(tls_redis: tuple[RedisServer, int, Pki], password: str, tmp_path: Path) -> None:
    """The real command line: ``backupplus serve --redis-url rediss://…``; the URL (and its password)
    is never printed."""
    _, tls_port, pki = tls_redis
    url = tls_url(password, tls_port, pki)
    with running_broker(url, tmp_path, env={"BACKUPPLUS_OPERATOR_TOKENS": OPERATOR}) as broker:
        for method, path, body in (("PUT", "/v1/contracts/SER-T-1", contract_body()),
                                   ("POST", "/v1/outages", declare_body())):
            request = urllib.request.Request(broker.url + path, data=json.dumps(body).encode(), method=method,
                                             headers={**AUTH, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status in (200, 201)
        log = broker.log()
    assert password not in log and quote(password, safe="") not in log
