"""Configuration, loaded once into a typed settings object (environment, then CLI flags)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

MIN_OPERATOR_TOKEN_LEN = 32
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class Settings(BaseModel):
    # A validation error never echoes a value: some are secrets (tokens, passwords in URLs).
    model_config = ConfigDict(hide_input_in_errors=True)

    redis_url: str | None = Field(None, description="Shared Redis; None: serve starts a private redis-server")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(None, description="Base URL in join links; default http://host:port")
    state_dir: Path = Path(".state")
    # The deployment's root secret (every key is derived from it): given to every broker and media node
    # (BACKUPPLUS_SECRET, or a 0600 file: BACKUPPLUS_SECRET_FILE). Unset: serve with its private Redis
    # keeps one in its state directory; with a shared Redis a root is minted only into an empty store.
    secret: SecretStr | None = None
    secret_file: Path | None = None
    operator_tokens: frozenset[str] = frozenset()
    hotline_phone: str = "+33 4 42 90 16 00"
    # Capacity per outage (contract clause 3-5).
    audio_ports: int = 8
    video_ports: int = 10
    max_video_height: int = 480
    # Leases: admitted but never offered -> the port is back after admission_lease_s (+ one sweep:
    # within 15 s); offered but not connected -> after media_connect_s more; media renews live ones.
    admission_lease_s: float = 13.0
    media_connect_s: float = 15.0
    media_lease_s: float = 8.0
    sweep_interval_s: float = 2.0
    # The ledger's audit (quotas/lua/repair.lua) runs on every active outage this often, in every broker.
    audit_interval_s: float = 30.0
    # One conference's link admits at most this fast (token bucket): a burst, then so many a second.
    admission_rate_burst: int = Field(12, ge=1)
    admission_rate_per_s: float = Field(1.0, gt=0)
    # A declared call's reported_at: at most this far ahead of now, at most this far back.
    reported_at_max_ahead_s: int = 300
    reported_at_max_back_days: int = 7
    # Participants are warned this long before a planned end of the outage.
    planned_end_warning_s: int = 600
    max_body_bytes: int = 64 * 1024
    media: bool = True
    media_capacity_ports: int = 36
    # Remote ICE candidates the media node sends checks to (media/candidates.py): "public" (production:
    # global addresses only), "private" (a private deployment: RFC 1918, CGNAT, ULA too) or "loopback"
    # (also 127/8 and ::1: the demo and tests on one machine). Never multicast, link-local, unspecified.
    media_remote_candidates: Literal["public", "private", "loopback"] = "public"
    retry_after_s: int = 30
    # SIGTERM: running calls may go on this long before the process stops.
    drain_timeout_s: float = 30.0
    # Processes: event loop (auto = uvloop when installed) and log level.
    loop: str = "auto"
    log_level: str = "INFO"
    # The hotline's CLI: the broker it talks to and its operator token (BACKUPPLUS_API, BACKUPPLUS_TOKEN).
    api: str = "http://127.0.0.1:8080"
    token: str | None = None

    # --- reliability (issue 14)
    # Redis clients: one command's timeout, and retries with exponential backoff (jitter) on
    # connection errors and timeouts, never starting an attempt that could end past the budget:
    # a dead pooled connection is replaced at once, a Redis that stays down still gets 503 within 2 s.
    redis_command_timeout_s: float = 0.5
    redis_connect_timeout_s: float = 0.25
    redis_retries: int = 3
    redis_retry_base_s: float = 0.025
    redis_retry_cap_s: float = 0.25
    redis_retry_budget_s: float = 1.0
    redis_pool_timeout_s: float = 0.75
    # standard: Redis as configured. strict: declares and admissions are acknowledged only once one
    # replica has them (WAIT 1 durability_wait_ms, else 503), the private redis-server fsyncs each write.
    durability: Literal["standard", "strict"] = "standard"
    durability_wait_ms: int = 300
    durability_wait_replicas: int = 1  # serve sets 0 for its private Redis (no replica: fsync instead)
    # serve's private redis-server: restarted (on its AOF) when it dies, at most this many times
    # within the window; past that serve stops with a non-zero status.
    private_redis_restarts: int = 5
    private_redis_restart_window_s: float = 60.0

    @model_validator(mode="after")
    def _wait_within_the_command_timeout(self) -> Settings:
        """WAIT blocks the connection's read: past the command timeout it would end as a timeout."""
        if self.durability_wait_ms >= self.redis_command_timeout_s * 1000:
            raise ValueError(
                f"durability_wait_ms ({self.durability_wait_ms}) must be below redis_command_timeout_s "
                f"({self.redis_command_timeout_s} s)"
            )
        return self

    # --- operations (issue 17)
    # Log lines: "text" (readable, the default) or "json" (one object a line, with the request's ids).
    log_format: str = Field("text", pattern="^(text|json)$")
    # Webhook receivers (BACKUPPLUS_WEBHOOK_URLS: comma-separated) and their Standard Webhooks secret
    # ("whsec_" + base64, 24 to 64 bytes); events are signed with it.
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = 10.0  # one delivery attempt
    webhook_retry_base_s: float = 5.0  # first retry after this; doubled each attempt (with jitter)
    webhook_retry_max_s: float = 3600.0  # longest wait between two attempts
    webhook_dead_after_s: float = 86400.0  # undelivered this long after the event: dead-letter list
    webhook_poll_s: float = 1.0  # how often a worker looks for due deliveries
    webhook_capacity_every_s: float = 60.0  # capacity.exhausted at most this often per outage and kind
    # The console's live feed (server-sent events, GET /v1/events): open streams per process, a
    # heartbeat comment this often, a stream closed after this long (the console reconnects with a new
    # stream ticket: revoked operator tokens stop there), stream tickets valid this long, and each
    # XREAD BLOCK of the process's audit reader at most this long (it also picks up new outages then).
    sse_max_streams: int = Field(100, ge=1)
    sse_heartbeat_s: float = Field(15.0, gt=0)
    sse_max_lifetime_s: float = Field(600.0, gt=0)
    sse_ticket_ttl_s: float = Field(60.0, gt=0)
    sse_block_ms: int = Field(500, ge=10, le=5000)

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(u.strip() for u in value.replace(" ", ",").split(",") if u.strip())
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL must be http:// or https://: {url!r}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value()
        try:
            raw = base64.b64decode(text.removeprefix("whsec_"), validate=True)
        except ValueError:
            raw = b""
        if not text.startswith("whsec_") or not 24 <= len(raw) <= 64:
            raise ValueError("webhook secret must be 'whsec_' + base64 of 24 to 64 random bytes")
        return value

    @model_validator(mode="after")
    def _webhook_secret_given(self) -> Settings:
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError("--webhook-url needs --webhook-secret (or BACKUPPLUS_WEBHOOK_SECRET)")
        return self

    # --- security (issue 15)
    # Operator tokens may also be given as SHA-256 hex digests (BACKUPPLUS_OPERATOR_TOKEN_HASHES,
    # comma-separated), so the configuration holds no usable secret. Configured tokens must be long.
    operator_token_hashes: frozenset[str] = frozenset()
    # The internal listener: the in-process media node's /internal routes (broker -> node calls), never
    # on the public listener. Port 0: a free port. internal_url: what other brokers call (default
    # http://internal_host:port); loopback by default, so only brokers on this machine reach the node.
    internal_host: str = "127.0.0.1"
    internal_port: int = Field(0, ge=0, le=65535)
    internal_url: str | None = None
    # A signed internal call is refused when its timestamp is further than this from the node's clock;
    # its nonce is kept in Redis this long (SET NX PX) so a replay within the window is refused.
    internal_max_skew_s: float = Field(60.0, gt=0)
    # Ops routes (/metrics, /healthz, /readyz) on a listener of their own when ops_port is set; the
    # public listener then has none of them. metrics_token: /metrics wants this bearer token.
    ops_host: str = "127.0.0.1"
    ops_port: int | None = Field(None, ge=0, le=65535)
    metrics_token: SecretStr | None = None

    @field_validator("operator_tokens")
    @classmethod
    def _long_operator_tokens(cls, value: frozenset[str]) -> frozenset[str]:
        """A short operator token can be guessed; the message names no token (it may be a real one)."""
        short = sorted(len(t) for t in value if len(t) < MIN_OPERATOR_TOKEN_LEN)
        if short:
            raise ValueError(
                f"{len(short)} operator token(s) shorter than {MIN_OPERATOR_TOKEN_LEN} characters "
                f"(length {', '.join(map(str, short))}): use random tokens of at least {MIN_OPERATOR_TOKEN_LEN} "
                "characters (python3 -c 'import secrets; print(\"bpo_\" + secrets.token_urlsafe(24))'), "
                "or leave BACKUPPLUS_OPERATOR_TOKENS unset and serve makes one"
            )
        return value

    @field_validator("operator_token_hashes")
    @classmethod
    def _sha256_hex(cls, value: frozenset[str]) -> frozenset[str]:
        bad = [h for h in value if not _SHA256_HEX.fullmatch(h)]
        if bad:
            raise ValueError(f"{len(bad)} operator token hash(es) are not SHA-256 hex digests (64 hex characters)")
        return frozenset(h.lower() for h in value)

    @field_validator("metrics_token")
    @classmethod
    def _long_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_OPERATOR_TOKEN_LEN:
            raise ValueError(f"the metrics token must be at least {MIN_OPERATOR_TOKEN_LEN} characters")
        return value

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_OPERATOR_TOKEN_LEN:
            raise ValueError(f"the root secret must be at least {MIN_OPERATOR_TOKEN_LEN} characters "
                             "(python3 -c 'import secrets; print(secrets.token_hex(32))')")
        return value

    def root_secret(self) -> bytes | None:
        """The configured root secret (``secret``, else the contents of ``secret_file``), or None.
        A file readable by others, unreadable or too short raises ValueError with what to do."""
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        if self.secret_file is None:
            return None
        path = self.secret_file
        try:
            mode = path.stat().st_mode
            value = path.read_text().strip().encode()
        except OSError as exc:
            raise ValueError(f"cannot read the root secret file {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise ValueError(f"the root secret file {path} is readable by others: chmod 600 {path}")
        if len(value) < MIN_OPERATOR_TOKEN_LEN:
            raise ValueError(f"the root secret in {path} is shorter than {MIN_OPERATOR_TOKEN_LEN} characters")
        return value

    @property
    def operator_digests(self) -> frozenset[str]:
        """SHA-256 hex of every operator token: the configured ones and the configured hashes."""
        return self.operator_token_hashes | {hashlib.sha256(t.encode()).hexdigest() for t in self.operator_tokens}
    # --- TURN (issue 13): participants behind firewalls that let out only TCP 443
    # External coturn servers (BACKUPPLUS_TURN_URLS, comma-separated; --turn-url, repeatable) sharing one
    # static-auth-secret (BACKUPPLUS_TURN_SECRET). None given: serve starts its own turnserver (unless
    # turn is false) listening on turn_host (default: the host of public_url, else host) on turn_port
    # (UDP and TCP) and turn_tls_port (TLS); 0 picks a free port. Its certificate: turn_cert/turn_key,
    # else a self-signed one made at start.
    turn_urls: tuple[str, ...] = ()
    turn_secret: SecretStr | None = None
    turn: bool = True
    turn_host: str | None = None
    turn_port: int = Field(3478, ge=0, le=65535)
    turn_tls_port: int = Field(5349, ge=0, le=65535)
    turn_cert: Path | None = None
    turn_key: Path | None = None
    # Media node addresses the private turnserver may relay to, besides this machine's own addresses and
    # media_public_ip (standalone media nodes elsewhere).
    turn_allowed_peers: tuple[str, ...] = ()
    # TURN credentials handed to a participant are valid this long (never past a planned end of the outage).
    turn_credential_ttl_s: int = Field(12 * 3600, ge=60)
    turn_user_quota: int = Field(12, ge=1)
    turn_total_quota: int = Field(1000, ge=1)
    # 1:1 NAT (cloud machines): the media node's public address replaces its host candidates' addresses.
    media_public_ip: str | None = None

    @field_validator("turn_urls", "turn_allowed_peers", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(u.strip() for u in value.replace(" ", ",").split(",") if u.strip())
        return value

    @field_validator("turn_urls")
    @classmethod
    def _turn_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parse_turn_url(url)
        return value

    @field_validator("turn_allowed_peers")
    @classmethod
    def _peer_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            for part in address.split("-"):
                try:
                    ipaddress.ip_address(part)
                except ValueError:
                    raise ValueError(f"not an IP address or range: {address!r}") from None
        return value

    @field_validator("media_public_ip")
    @classmethod
    def _public_ip(cls, value: str | None) -> str | None:
        if value:
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                raise ValueError(f"--public-ip must be an IP address, not {value!r}") from None
        return None

    @model_validator(mode="after")
    def _turn_secret_given(self) -> Settings:
        if self.turn_urls and not self.turn_secret:
            raise ValueError("--turn-url needs --turn-secret (or BACKUPPLUS_TURN_SECRET): the external coturn "
                             "servers' static-auth-secret")
        if (self.turn_cert is None) != (self.turn_key is None):
            raise ValueError("--turn-cert and --turn-key go together")
        return self

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Every field from ``BACKUPPLUS_<FIELD>`` when set (pydantic coerces the text), then the
        overrides that are not None (command-line flags). Operator tokens are comma-separated."""
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"BACKUPPLUS_{name.upper()}")
            if raw is None or raw == "":
                continue
            if name in ("operator_tokens", "operator_token_hashes"):
                values[name] = frozenset(t.strip() for t in raw.split(",") if t.strip())
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


_TURN_URL = re.compile(
    r"^(?P<scheme>turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


def parse_turn_url(url: str) -> tuple[str, str, int, str]:
    """``turn:host[:port][?transport=udp|tcp]`` or ``turns:…`` (RFC 7065) as (scheme, host, port,
    transport); ValueError saying what is wrong otherwise. turns: is TLS over TCP."""
    found = _TURN_URL.match(url.strip())
    if found is None:
        raise ValueError(
            f"cannot parse TURN URL {url!r}: expected turn:HOST[:PORT][?transport=udp|tcp] or "
            "turns:HOST[:PORT][?transport=tcp], e.g. turns:turn.example.com:443?transport=tcp"
        )
    scheme, host = found["scheme"], found["host"]
    port = int(found["port"]) if found["port"] else (5349 if scheme == "turns" else 3478)
    if not 0 < port < 65536:
        raise ValueError(f"TURN URL {url!r}: port {port} is out of range")
    transport = found["transport"] or ("tcp" if scheme == "turns" else "udp")
    if scheme == "turns" and transport == "udp":
        raise ValueError(f"TURN URL {url!r}: turns: runs over TCP (DTLS to TURN is not offered)")
    return scheme, host, port, transport
