"""``backupplus serve``: the broker's API, pages, /metrics and an in-process media node in one process.

Without a Redis URL it starts and owns a private ``redis-server``. SIGTERM lets running calls end
(the in-process node drains) before the process stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from aiohttp import web

from api.app import create_app
from api.appkeys import HEALTH_CHECK
from api.auth import new_operator_token
from infra import eventloop
from infra.redisconn import StoreMisconfigured, store_client
from infra.redisproc import PrivateRedis, RedisServerError, StateDirLocked
from infra.settings import Settings
from quotas.secret import KeyRingError, existing_root

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
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
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
    supervisor: asyncio.Task[None] | None = None
    failures: list[str] = []
    if not settings.redis_url:
        private, settings = _start_private_redis(settings)
    try:
        if private is not None and settings.root_secret() is None:
            settings = settings.model_copy(update={"secret_file": await _state_dir_secret(settings)})
        settings = _with_operator_token(settings, demo)
        app = create_app(settings, media_plane=media_plane(in_process_node=settings.media))
        if private is not None:
            supervisor = _supervise_private_redis(app, private, stop, failures)
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
        if supervisor is not None:
            supervisor.cancel()
        if private is not None:
            private.stop()


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
