"""``backupplus``: run the broker, a media node or the load test, and the hotline's CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from infra import eventloop
from infra.settings import Settings

DEFAULT_API = "http://127.0.0.1:8080"


# --- serve -----------------------------------------------------------------------------------------
async def _load_demo(settings: Settings) -> dict[str, str]:
    """Demo contract, one active outage and one conference; returns what to print."""

    from api.auth import sign_join_token
    from broker import sla
    from broker.contracts import demo_contract
    from broker.errors import OutageAlreadyActive
    from broker.service import Broker
    from infra.redisconn import connect
    from quotas.secret import shared_secret

    assert settings.redis_url
    client = connect(settings.redis_url, decode_responses=True)
    try:
        broker = Broker(client, settings)
        contract = demo_contract(datetime.now(sla.PARIS).date())
        await broker.contracts.put(contract)
        serial = next(e.serial for e in contract.equipment if e.kind == "video_bridge")
        try:
            outage, _ = await broker.declare_outage(
                {
                    "contract": contract.number,
                    "serial": serial,
                    "ticket": {
                        "priority": "urgent",
                        "site": "Siège, Aix-en-Provence",
                        "contact": "M. Durand, +33 4 00 00 00 00",
                        "description": "Pont de visioconférence hors service (démo)",
                    },
                    "reported_at": None,
                }
            )
        except OutageAlreadyActive as exc:
            outage = await broker.get_outage(exc.extra["outage_id"])
        if outage["conferences"]:
            conference_id = outage["conferences"][0]
        else:
            conference_id = (
                await broker.create_conference(
                    outage["id"], {"title": "Comité de direction", "priority": 1, "reserve": {"audio": 2, "video": 4}}
                )
            )["id"]
        token = sign_join_token(await shared_secret(client), conference_id)
        return {"contract": contract.number, "outage": outage["id"], "join_url": f"{settings.base_url}/join/{token}"}
    finally:
        await client.aclose()


async def _serve(settings: Settings, demo: bool) -> int:
    from aiohttp import web

    from api.app import create_app
    from api.auth import new_operator_token
    from backupplus.media_plane import media_plane
    from infra.redisproc import RedisServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    private: RedisServer | None = None
    if not settings.redis_url:
        private = RedisServer(settings.state_dir / "redis", persistent=True).start()
        settings = settings.model_copy(update={"redis_url": private.url})
        print(f"redis: started a private redis-server on {private.url} (data in {settings.state_dir / 'redis'})")
    try:
        if not settings.operator_tokens:
            token = new_operator_token()
            settings = settings.model_copy(update={"operator_tokens": frozenset({token})})
            print(f"operator token (this run only; set BACKUPPLUS_OPERATOR_TOKENS to choose): {token}")
        elif demo:
            print(f"operator token: {min(settings.operator_tokens)}")
        app = create_app(settings, media_plane=media_plane(in_process_node=settings.media))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        print(f"api: {settings.base_url}/v1 (OpenAPI at {settings.base_url}/openapi.json, metrics at /metrics)")
        print(f"console: {settings.base_url}/console")
        if demo:
            info = await _load_demo(settings)
            print(f"demo: contract {info['contract']}, outage {info['outage']}")
            print(f"join link: {info['join_url']}")
        sys.stdout.flush()
        await stop.wait()
        await _drain_media(app, settings.drain_timeout_s)
        print("stopping ...", flush=True)
        cleanup = asyncio.create_task(runner.cleanup())
        done, _ = await asyncio.wait({cleanup}, timeout=10)
        if not done:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.print_stack(limit=6, file=sys.stderr)
            await cleanup
        return 0
    finally:
        if private is not None:
            private.stop()


async def _drain_media(app: Any, timeout: float) -> None:
    """SIGTERM: the in-process media node takes no new conference and lets running calls end."""
    from backupplus.media_plane import MEDIA_PLANE

    plane = app.get(MEDIA_PLANE)
    if plane is not None and plane.node is not None:
        print(f"draining the media node (up to {timeout:.0f} s) ...", flush=True)
        await plane.node.drain(timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        public_url=args.public_url,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        media=False if args.no_media else None,
    )
    try:
        return eventloop.run(_serve(settings, args.demo), args.loop)
    except OSError as exc:
        print(f"backupplus serve: {exc}", file=sys.stderr)
        return 1


# --- hotline CLI (talks to the HTTP API) -----------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    token = args.token or os.environ.get("BACKUPPLUS_TOKEN") or next(
        iter(t for t in os.environ.get("BACKUPPLUS_OPERATOR_TOKENS", "").split(",") if t), ""
    )
    if not token:
        raise SystemExit("backupplus: no operator token: pass --token or set BACKUPPLUS_TOKEN")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(args.api.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            problem = json.loads(raw)
        except ValueError:
            problem = {"detail": raw.decode(errors="replace")[:200]}
        raise ApiError(exc.code, problem) from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"backupplus: cannot reach the API at {args.api}: {exc.reason}") from None


def _print_outage(o: dict[str, Any]) -> None:
    cap, use = o["capacity"], o["in_use"]
    print(f"{o['id']}  {o['state']:<8}  contract {o['contract']}  serial {o['serial']}  ticket {o['ticket']['number']} ({o['ticket']['priority']})")
    print(f"  taken at {o['taken_at']}  ack by {o['ack_deadline']}  restore by {o['restore_deadline']}")
    print(f"  window ends {o['window_ends_at']}")
    print(f"  ports: video {use['video']}/{cap['video']} (≤{cap['max_video_height']}p), audio {use['audio']}/{cap['audio']}; conferences: {len(o['conferences'])}")


def cmd_outage(args: argparse.Namespace) -> int:
    if args.action == "declare":
        body: dict[str, Any] = {
            "contract": args.contract,
            "serial": args.serial,
            "ticket": {"priority": args.priority, "site": args.site, "contact": args.contact, "description": args.description},
        }
        if args.reported_at:
            body["reported_at"] = args.reported_at
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
        result = _call(args, "POST", "/v1/outages", body, headers)
    elif args.action == "list":
        result = _call(args, "GET", "/v1/outages" + (f"?state={args.state}" if args.state else ""))
    elif args.action == "show":
        result = _call(args, "GET", f"/v1/outages/{args.id}")
    elif args.action == "restore":
        result = _call(args, "POST", f"/v1/outages/{args.id}/restore", {})
    elif args.action == "extend":
        result = _call(args, "POST", f"/v1/outages/{args.id}/extend", {"window_ends_at": args.window_ends_at})
    else:  # pragma: no cover - argparse guards the choices
        raise SystemExit(2)
    if args.json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, list):
        if not result:
            print("no outages")
        for o in result:
            _print_outage(o)
    else:
        _print_outage(result)
    return 0


def cmd_contracts(args: argparse.Namespace) -> int:
    from broker.contracts import ContractFileError, load_contracts_file

    try:
        contracts = load_contracts_file(Path(args.file))
    except ContractFileError as exc:
        print(f"backupplus contracts import: {exc}", file=sys.stderr)
        return 1
    for contract in contracts:
        _call(args, "PUT", f"/v1/contracts/{contract.number}", contract.model_dump(mode="json"))
        print(f"imported {contract.number} ({contract.client.company}, {len(contract.equipment)} equipment)")
    return 0


# --- parser ----------------------------------------------------------------------------------------
def _api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=os.environ.get("BACKUPPLUS_API", DEFAULT_API), help="broker base URL")
    p.add_argument("--token", help="operator token (default: $BACKUPPLUS_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the raw JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backupplus", description="Backup+ conferencing resource broker")
    parser.add_argument("--log-level", default=os.environ.get("BACKUPPLUS_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the broker API, pages, /metrics and an in-process media node")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--redis-url", default=None, help="shared Redis (default: start a private redis-server)")
    serve.add_argument("--public-url", default=None, help="base URL used in join links")
    serve.add_argument("--state-dir", default=None, help="where the private Redis keeps its data (default .state)")
    serve.add_argument("--demo", action="store_true", help="load a demo contract, outage and conference")
    serve.add_argument("--no-media", action="store_true", help="no in-process media node")
    serve.add_argument("--loop", choices=eventloop.CHOICES, default=os.environ.get("BACKUPPLUS_LOOP", eventloop.DEFAULT),
                       help="event loop (auto: uvloop when installed)")
    serve.set_defaults(func=cmd_serve)

    outage = sub.add_parser("outage", help="the hotline's outage commands")
    osub = outage.add_subparsers(dest="action", required=True)
    declare = osub.add_parser("declare", help="declare a client's server down")
    declare.add_argument("--contract", required=True)
    declare.add_argument("--serial", required=True)
    declare.add_argument("--priority", choices=["urgent", "medium", "low"], default="urgent")
    declare.add_argument("--site", default="")
    declare.add_argument("--contact", default="")
    declare.add_argument("--description", default="")
    declare.add_argument("--reported-at", help="RFC 3339 (default now)")
    declare.add_argument("--idempotency-key")
    lst = osub.add_parser("list", help="list outages")
    lst.add_argument("--state", choices=["active", "restored", "expired"])
    for name in ("show", "restore"):
        p = osub.add_parser(name, help=f"{name} an outage")
        p.add_argument("id")
    extend = osub.add_parser("extend", help="move an outage's window end")
    extend.add_argument("id")
    extend.add_argument("window_ends_at", help="RFC 3339")
    for p in (declare, lst, extend, *[osub.choices[n] for n in ("show", "restore")]):
        _api_options(p)
    outage.set_defaults(func=cmd_outage)

    contracts = sub.add_parser("contracts", help="contract commands")
    csub = contracts.add_subparsers(dest="action", required=True)
    imp = csub.add_parser("import", help="import a JSON or YAML list of contracts")
    imp.add_argument("file")
    _api_options(imp)
    contracts.set_defaults(func=cmd_contracts)

    sub.add_parser("media", help="run a standalone media node (see `backupplus media --help`)", add_help=False)
    sub.add_parser("loadtest", help="run the locust load test (see `backupplus loadtest --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # media and loadtest own their own argument parsers.
    if argv and argv[0] == "media":
        from media.server import main as media_main

        return media_main(argv[1:])
    if argv and argv[0] == "loadtest":
        from loadtests.runner import main as loadtest_main

        return loadtest_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ApiError as exc:
        code = exc.problem.get("code", "")
        reason = exc.problem.get("reason")
        extra = f" ({reason})" if reason else ""
        print(f"backupplus: {exc} [{exc.status} {code}{extra}]", file=sys.stderr)
        for err in exc.problem.get("errors", []):
            print(f"  - {'.'.join(map(str, err.get('loc', [])))}: {err.get('msg')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
