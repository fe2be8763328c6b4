"""``backupplus media``: a standalone media node (its own aiohttp app and Redis client).

SIGTERM drains: the node turns "draining" (no new conferences; /readyz answers 503), running calls go
on until they end or ``--drain-timeout`` passes, then it exits. SIGINT (or a second SIGTERM) stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from aiohttp import web

from infra import eventloop
from infra.redisconn import connect
from infra.settings import Settings
from media import srtp
from media.internal import add_internal_routes
from media.node import MediaNode
from quotas.secret import KeyRingError

log = logging.getLogger("backupplus.media.server")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="backupplus media", description="Run a standalone media node.")
    p.add_argument("--redis-url", default=os.environ.get("BACKUPPLUS_REDIS_URL"),
                   help="the brokers' Redis: redis://, redis+sentinel:// or redis+cluster:// (infra/redisconn.py)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--capacity", type=int, default=None, help="ports this node takes (default 36)")
    p.add_argument(
        "--public-url", default=None, help="URL brokers reach this node at (default http://host:port)"
    )
    p.add_argument("--node-id", default=None)
    p.add_argument("--public-ip", default=None,
                   help="1:1 NAT: the node's public address in its ICE candidates (default $BACKUPPLUS_MEDIA_PUBLIC_IP)")
    p.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to let calls end on SIGTERM")
    p.add_argument("--remote-candidates", choices=["public", "private", "loopback"], default=None,
                   help="remote ICE candidates checked: public (default), private, loopback (one machine)")
    p.add_argument("--fps", type=float, default=25.0, help="composed video frame rate")
    p.add_argument(
        "--gil-switch-ms",
        type=float,
        default=1.0,
        help="sys.setswitchinterval: the compositor thread waits less for the GIL (Python: 5)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--loop", choices=eventloop.CHOICES, default=os.environ.get("BACKUPPLUS_LOOP", eventloop.DEFAULT),
                   help="event loop (auto: uvloop when installed)")
    return p.parse_args(argv)


def build_app(node_ref: dict[str, MediaNode]) -> web.Application:
    app = web.Application(client_max_size=512 * 1024)
    add_internal_routes(app, lambda: node_ref.get("node"))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        node = node_ref.get("node")
        if node is None:
            return web.json_response({"status": "starting"}, status=503)
        if node.draining:
            return web.json_response({"status": "draining", "sessions": node.load}, status=503)
        return web.json_response({"status": "ready", "node": node.node_id, "load": node.load})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(args: argparse.Namespace) -> int:
    if args.gil_switch_ms > 0:
        sys.setswitchinterval(args.gil_switch_ms / 1000)
    settings = Settings.from_env(
        redis_url=args.redis_url, host=args.host, port=args.port, media_capacity_ports=args.capacity,
        media_remote_candidates=args.remote_candidates,
        media_public_ip=args.public_ip,
    )
    url = args.public_url or f"http://{args.host}:{args.port}"
    redis = connect(args.redis_url, decode_responses=True)
    node_ref: dict[str, MediaNode] = {}
    runner = web.AppRunner(build_app(node_ref), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    node = MediaNode(settings, url=url, node_id=args.node_id, fps=args.fps)
    await node.start(redis)
    node_ref["node"] = node
    print(f"media node {node.node_id} ready at {url}", flush=True)

    loop = asyncio.get_running_loop()
    drain, stop = asyncio.Event(), asyncio.Event()

    def on_term() -> None:
        (stop if drain.is_set() else drain).set()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        waiters = [asyncio.create_task(drain.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if drain.is_set() and not stop.is_set():
            node.begin_drain()
            drained = asyncio.create_task(node.drain(args.drain_timeout))
            await asyncio.wait([drained, waiters[1]], return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        for w in waiters:
            w.cancel()
    finally:
        await node.stop(release_state="left/node_stopped")
        await runner.cleanup()
        await redis.aclose()
    print(f"media node {node.node_id} stopped", flush=True)
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.redis_url:
        print("backupplus media: --redis-url (or BACKUPPLUS_REDIS_URL) is required", file=sys.stderr)
        return 2
    srtp.install()  # this process is a media node: SRTP keeps the GIL (media.srtp)
    try:
        return eventloop.run(serve(args), args.loop)
    except (KeyRingError, ValueError) as exc:  # the key ring or the root secret (clear messages)
        print(f"backupplus media: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
