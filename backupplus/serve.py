"""``backupplus serve``: the broker's API, pages, /metrics and an in-process media node in one process.

Without a Redis URL it starts and owns a private ``redis-server``; without ``--turn-url`` a private
coturn ``turnserver`` (participants behind firewalls; direct UDP only when coturn is missing). SIGTERM
lets running calls end (the in-process node drains) before the process stops.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from api.app import create_app
from api.appkeys import HEALTH_CHECK
from api.auth import new_operator_token
from broker.turn import TurnService, derive_turn_secret
from infra import eventloop
from infra.redisconn import StoreMisconfigured, store_client
from infra.redisproc import PrivateRedis, RedisServerError, StateDirLocked
from infra.settings import Settings
from infra.turnproc import (
    INSTALL_HINT,
    PrivateTurn,
    TurnConfig,
    TurnServerError,
    local_addresses,
    turnserver_binary,
)
from quotas.secret import KeyRingError, existing_root, load_keyring

from .demo import load_demo
from .media_plane import MEDIA_PLANE, media_plane

log = logging.getLogger("backupplus.serve")
CLEANUP_TIMEOUT_S = 10.0
SECRET_FILE = "root.secret"  # in the state directory: the private Redis's root secret (0600)


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment, then the command line's flags."""
    return Settings.from_env(
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        public_url=args.public_url,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        media=False if args.no_media else None,
        media_remote_candidates=args.remote_candidates,
        loop=args.loop,
        durability=args.durability,
        webhook_urls=tuple(args.webhook_url) if args.webhook_url else None,
        webhook_secret=args.webhook_secret,
        log_format=args.log_format,
        internal_host=args.internal_host,
        internal_port=args.internal_port,
        internal_url=args.internal_url,
        ops_host=args.ops_host,
        ops_port=args.ops_port,
        turn_urls=tuple(args.turn_url) if args.turn_url else None,
        turn_secret=args.turn_secret,
        turn=False if args.no_turn else None,
        turn_host=args.turn_host,
        turn_port=args.turn_port,
        turn_tls_port=args.turn_tls_port,
        turn_cert=Path(args.turn_cert) if args.turn_cert else None,
        turn_key=Path(args.turn_key) if args.turn_key else None,
        media_public_ip=args.public_ip,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.demo and "media_remote_candidates" not in settings.model_fields_set:
        # the demo's browsers run on this machine or its LAN: their candidates are local addresses
        settings = settings.model_copy(update={"media_remote_candidates": "loopback"})
    try:
        return eventloop.run(_serve(settings, args.demo), settings.loop)
    except (OSError, ValueError, StoreMisconfigured, StateDirLocked, RedisServerError, KeyRingError) as exc:
        print(f"backupplus serve: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: Settings, demo: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    private: PrivateRedis | None = None
    private_turn: PrivateTurn | None = None
    supervisor: asyncio.Task[None] | None = None
    turn_supervisor: asyncio.Task[None] | None = None
    failures: list[str] = []
    if not settings.redis_url:
        private, settings = _start_private_redis(settings)
    try:
        if private is not None and settings.root_secret() is None:
            settings = settings.model_copy(update={"secret_file": await _state_dir_secret(settings)})
        settings = _with_operator_token(settings, demo)
        turn, private_turn = await _start_turn(settings)
        app = create_app(settings, media_plane=media_plane(in_process_node=settings.media), turn=turn)
        if private is not None:
            supervisor = _supervise_private_redis(app, private, stop, failures)
        if private_turn is not None:
            turn_supervisor = asyncio.create_task(private_turn.supervise(), name="backupplus-private-turn")
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port, reuse_address=True).start()
        _print_addresses(settings)
        if demo:
            info = await load_demo(settings)
            print(f"demo: contract {info['contract']}, outage {info['outage']}")
            print(f"join link: {info['join_url']}")
            if info["other_join_url"]:
                print(f"a less important conference (priority 5), preempted first: {info['other_join_url']}")
        sys.stdout.flush()
        await stop.wait()
        await _drain_media(app, settings.drain_timeout_s)
        print("stopping ...", flush=True)
        await _cleanup(runner)
        for failure in failures:
            print(f"backupplus serve: {failure}", file=sys.stderr)
        return 3 if failures else 0
    finally:
        for task in (supervisor, turn_supervisor):
            if task is not None:
                task.cancel()
        if private_turn is not None:
            private_turn.stop()
        if private is not None:
            private.stop()


async def _start_turn(settings: Settings) -> tuple[TurnService, PrivateTurn | None]:
    """The TURN servers participants are given: --turn-url's; else serve's own turnserver, its secret
    derived from the broker's root secret; else (coturn missing, --no-turn, or it would not start) none,
    said in the log and in /readyz."""
    if settings.turn_urls:
        print(f"turn: external TURN servers {', '.join(settings.turn_urls)}")
        return TurnService.external(settings), None
    ttl = settings.turn_credential_ttl_s
    if not settings.turn:
        return TurnService(detail="TURN is off (--no-turn): participants connect over direct UDP only", ttl_s=ttl), None
    if turnserver_binary() is None:
        log.warning("%s", INSTALL_HINT)
        print(f"turn: {INSTALL_HINT}", file=sys.stderr)
        return TurnService(detail=INSTALL_HINT, ttl_s=ttl), None
    client = store_client(settings)  # every URL form the broker takes (sentinel, TLS, password)
    try:
        secret = derive_turn_secret((await load_keyring(client, settings.root_secret())).signing_root().root)
    except Exception as exc:  # noqa: BLE001 - Redis unreachable: the app's own start says so next
        reason = f"the root secret could not be read ({type(exc).__name__}): no private turnserver"
        log.error("%s", reason)
        return TurnService(detail=reason, ttl_s=ttl), None
    finally:
        await client.aclose()
    config = _private_turn_config(settings, secret)
    try:
        private = PrivateTurn(config, settings.state_dir).start()
    except TurnServerError as exc:
        reason = f"the private turnserver did not start ({exc}): participants connect over direct UDP only"
        log.error("%s", reason)
        print(f"turn: {reason}", file=sys.stderr)
        return TurnService(detail=reason, ttl_s=ttl), None
    urls = tuple(private.server.urls(_turn_public_host(settings)))
    print(f"turn: started a private turnserver (coturn) for {', '.join(urls)} (log in {private.server.log_file})")
    service = TurnService(urls=urls, secret=secret, mode="private", detail=f"private turnserver: {', '.join(urls)}",
                          ttl_s=ttl, health=private.health)
    return service, private


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _turn_public_host(settings: Settings) -> str:
    """How participants reach the private turnserver: --turn-host, else the host of the public URL, else
    the public IP, else the address serve listens on."""
    if settings.turn_host:
        return settings.turn_host
    public = urlsplit(settings.public_url).hostname if settings.public_url else None
    if public:
        return public
    if settings.media_public_ip:
        return settings.media_public_ip
    if not _wildcard(settings.host):
        return settings.host
    return next(iter(local_addresses()), "127.0.0.1")


def _private_turn_config(settings: Settings, secret: str) -> TurnConfig:
    """Listens where serve listens (every interface for a wildcard host); relays only to the media nodes:
    this machine's addresses (the in-process node), the public IP and --turn-allowed-peers."""
    listen_ip: str | None = None
    try:
        if not _wildcard(settings.host):
            listen_ip = str(ipaddress.ip_address(settings.host))
    except ValueError:
        listen_ip = None  # a host name: every interface
    peers = [*local_addresses(), *([settings.media_public_ip] if settings.media_public_ip else []),
             *settings.turn_allowed_peers]
    external = None
    if settings.media_public_ip:
        external = f"{settings.media_public_ip}/{listen_ip}" if listen_ip else settings.media_public_ip
    names = [n for n in (_turn_public_host(settings), listen_ip, "localhost") if n]
    return TurnConfig(
        secret=secret, listen_ip=listen_ip, port=settings.turn_port, tls_port=settings.turn_tls_port,
        allowed_peers=list(dict.fromkeys(peers)), external_ip=external, cert=settings.turn_cert,
        key=settings.turn_key, cert_names=names, user_quota=settings.turn_user_quota,
        total_quota=settings.turn_total_quota,
    )


def _start_private_redis(settings: Settings) -> tuple[PrivateRedis, Settings]:
    """Starts serve's own redis-server (locked state directory, password, fsync each write with
    ``--durability strict``); the settings then point at it (no replica to WAIT for)."""
    private = PrivateRedis(
        settings.state_dir,
        fsync_always=settings.durability == "strict",
        restarts=settings.private_redis_restarts,
        restart_window_s=settings.private_redis_restart_window_s,
    ).start()
    print(
        f"redis: started a private redis-server on {private.display_url} (data in {private.data_dir}, "
        f"password in {private.state_dir / 'redis.pass'})"
    )
    return private, settings.model_copy(update={"redis_url": private.url, "durability_wait_replicas": 0})


async def _state_dir_secret(settings: Settings) -> Path:
    """The root secret of serve's private Redis, kept beside its data (0600): made once, or adopted
    from the key ring (or the earlier single secret) that Redis already holds, so the links sent
    before stay valid and a lost ring is re-seeded from the file, never minted anew."""
    path = settings.state_dir / SECRET_FILE
    if path.exists():
        return path
    client = store_client(settings, decode_responses=False)
    try:
        root = await existing_root(client)
    finally:
        await client.aclose()
    value = root if root is not None else secrets.token_hex(32).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(value + b"\n")
    os.replace(tmp, path)
    log.info("root secret kept in %s (%s)", path, "adopted from Redis" if root is not None else "new")
    return path


def _supervise_private_redis(
    app: web.Application, private: PrivateRedis, stop: asyncio.Event, failures: list[str]
) -> asyncio.Task[None]:
    """/healthz fails while the private redis-server is down; a dead one is restarted, and when it
    keeps dying serve stops with a non-zero status."""
    app[HEALTH_CHECK] = private.health

    def give_up(reason: str) -> None:
        log.error("%s", reason)
        failures.append(reason)
        stop.set()

    return asyncio.create_task(private.supervise(give_up), name="backupplus-private-redis")


def _with_operator_token(settings: Settings, demo: bool) -> Settings:
    """Makes an operator token for this run when none is configured (nor any hash), and prints it.
    ``--demo`` prints a working token too: always a generated one, added for this run, never a
    configured one (those are secrets the terminal and its scrollback need not see)."""
    if not settings.operator_tokens and not settings.operator_token_hashes:
        token = new_operator_token()
        print(f"operator token (this run only; set BACKUPPLUS_OPERATOR_TOKENS to choose): {token}")
        return settings.model_copy(update={"operator_tokens": frozenset({token})})
    if demo:
        token = new_operator_token()
        print(f"operator token (demo, this run only; the configured ones work too): {token}")
        return settings.model_copy(update={"operator_tokens": settings.operator_tokens | {token}})
    return settings


def _print_addresses(settings: Settings) -> None:
    ops = f"http://{settings.ops_host}:{settings.ops_port}" if settings.ops_port is not None else settings.base_url
    print(f"api: {settings.base_url}/v1 (OpenAPI at {settings.base_url}/openapi.json, metrics at {ops}/metrics)")
    print(f"console: {settings.base_url}/console")


async def _drain_media(app: web.Application, timeout: float) -> None:
    """SIGTERM: the in-process media node takes no new conference and lets running calls end."""
    plane = app.get(MEDIA_PLANE)
    if plane is not None and plane.node is not None:
        print(f"draining the media node (up to {timeout:.0f} s) ...", flush=True)
        await plane.node.drain(timeout)


async def _cleanup(runner: web.AppRunner) -> None:
    """Stops the app; names the tasks that keep it from stopping in time, then waits for them."""
    cleanup = asyncio.create_task(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=CLEANUP_TIMEOUT_S)
    if not done:
        pending = sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())
        log.warning("shutdown is taking longer than %.0f s; still running: %s", CLEANUP_TIMEOUT_S, ", ".join(pending))
        await cleanup
