"""``backupplus``: the entry point. Builds the command line and hands each command to its module:
``serve`` (backupplus.serve), the hotline's commands (backupplus.hotline), ``media`` (media.server)
and ``loadtest`` (loadtests.runner), which own their own parsers."""

from __future__ import annotations

import argparse
import getpass
import sys

from pydantic import ValidationError

from infra import eventloop, logsetup
from infra.settings import Settings

from . import hotline, secrets_cli, serve


def _api_options(p: argparse.ArgumentParser, settings: Settings) -> None:
    p.add_argument("--api", default=settings.api, help="broker base URL (default: $BACKUPPLUS_API)")
    p.add_argument("--token", help="operator token (default: $BACKUPPLUS_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the raw JSON")


def _serve_parser(sub: argparse._SubParsersAction, settings: Settings) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the broker API, pages, /metrics and an in-process media node")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--redis-url", default=None, help=(
        "shared Redis: redis://[:password@]host:port/db, redis+sentinel://host:port[,…]/service or "
        "redis+cluster://host:port[,…]/ (default: start a private redis-server)"))
    p.add_argument("--public-url", default=None, help="base URL used in join links")
    p.add_argument("--state-dir", default=None, help="where the private Redis keeps its data (default .state)")
    p.add_argument("--demo", action="store_true", help="load a demo contract, outage and conference")
    p.add_argument("--no-media", action="store_true", help="no in-process media node")
    p.add_argument("--remote-candidates", choices=["public", "private", "loopback"], default=None,
                   help="remote ICE candidates the media node checks: public (default; --demo: loopback), "
                        "private (also RFC 1918, CGNAT, ULA), loopback (also 127/8: one machine)")
    p.add_argument("--durability", choices=["standard", "strict"], default=None,
                   help="strict: declares and admissions wait for a replica (WAIT), the private Redis fsyncs "
                        "each write (default $BACKUPPLUS_DURABILITY or standard)")
    p.add_argument("--loop", choices=eventloop.CHOICES, default=None,
                   help="event loop (default $BACKUPPLUS_LOOP or auto: uvloop when installed)")
    p.add_argument("--webhook-url", action="append", default=None,
                   help="POST signed events to this URL (repeatable; default $BACKUPPLUS_WEBHOOK_URLS)")
    p.add_argument("--webhook-secret", default=None,
                   help="Standard Webhooks secret, whsec_… (prefer $BACKUPPLUS_WEBHOOK_SECRET: flags show in ps)")
    p.add_argument("--internal-host", default=None,
                   help="listener of the in-process media node's internal routes (default 127.0.0.1)")
    p.add_argument("--internal-port", type=int, default=None, help="its port (default: a free one)")
    p.add_argument("--internal-url", default=None,
                   help="URL other brokers reach the in-process media node at (default http://internal-host:port)")
    p.add_argument("--ops-host", default=None, help="listener of /metrics, /healthz, /readyz (with --ops-port)")
    p.add_argument("--ops-port", type=int, default=None,
                   help="serve /metrics, /healthz, /readyz on this port only, not on the public listener")
    turn = p.add_argument_group("TURN (participants behind firewalls; default: a private coturn turnserver)")
    turn.add_argument("--turn-url", action="append", default=None,
                      help="an external coturn server, turn:HOST:PORT?transport=udp|tcp or turns:HOST:PORT "
                           "(repeatable; default $BACKUPPLUS_TURN_URLS); needs --turn-secret")
    turn.add_argument("--turn-secret", default=None,
                      help="the external servers' static-auth-secret (prefer $BACKUPPLUS_TURN_SECRET: flags show in ps)")
    turn.add_argument("--no-turn", action="store_true", help="no private turnserver: direct UDP only")
    turn.add_argument("--turn-host", default=None, help="the private turnserver's name in the URLs handed out "
                      "(default: the public URL's host)")
    turn.add_argument("--turn-port", type=int, default=None, help="private turnserver UDP+TCP port (default 3478)")
    turn.add_argument("--turn-tls-port", type=int, default=None, help="private turnserver TLS port (default 5349)")
    turn.add_argument("--turn-cert", default=None, help="PEM certificate of the private turnserver's TLS port")
    turn.add_argument("--turn-key", default=None, help="its PEM key (without these: a self-signed pair)")
    turn.add_argument("--public-ip", default=None,
                      help="1:1 NAT: the media node's public address in its ICE candidates "
                           "(default $BACKUPPLUS_MEDIA_PUBLIC_IP)")
    p.set_defaults(func=serve.cmd_serve)


def _outage_parser(sub: argparse._SubParsersAction, settings: Settings) -> None:  # type: ignore[type-arg]
    outage = sub.add_parser("outage", help="the hotline's outage commands")
    osub = outage.add_subparsers(dest="action", required=True)
    declare = osub.add_parser(
        "declare", help="declare a client's server down (clause 3-3: site, contact and description are required; "
        "asked for on a terminal when missing)")
    declare.add_argument("--contract", required=True)
    declare.add_argument("--serial", required=True)
    declare.add_argument("--priority", choices=["urgent", "medium", "low"], default="urgent",
                         help="default urgent: a total outage (clause 3-3)")
    declare.add_argument("--site", help="the site concerned")
    declare.add_argument("--contact", help="an on-site contact (name, phone)")
    declare.add_argument("--description", help="a detailed description of the problem")
    declare.add_argument("--company", help="default: the contract's")
    declare.add_argument("--model", help="default: the equipment's")
    declare.add_argument("--reported-at", help="RFC 3339 (default now)")
    declare.add_argument("--idempotency-key")
    lst = osub.add_parser("list", help="list outages")
    lst.add_argument("--state", choices=["active", "restored"])
    for name in ("show", "restore"):
        osub.add_parser(name, help=f"{name} an outage").add_argument("id")
    ack = osub.add_parser("ack", help="record that the hotline took charge (once)")
    ack.add_argument("id")
    ack.add_argument("--by", default=getpass.getuser(), help="who takes charge (default: your login name)")
    extend = osub.add_parser("extend", help="set a planned end of Backup+ ('none' clears it)")
    extend.add_argument("id")
    extend.add_argument("window_ends_at", help="RFC 3339, or none")
    events = osub.add_parser("events", help="the outage's audit trail: every decision, oldest first")
    events.add_argument("id")
    events.add_argument("--after", default="", help="only events after this event id")
    events.add_argument("--limit", type=int, default=100)
    for p in osub.choices.values():
        _api_options(p, settings)
    outage.set_defaults(func=hotline.cmd_outage)


def _ticket_parser(sub: argparse._SubParsersAction, settings: Settings) -> None:  # type: ignore[type-arg]
    ticket = sub.add_parser("ticket", help="tickets: every request to the hotline and its outcome")
    tsub = ticket.add_subparsers(dest="action", required=True)
    tsub.add_parser("show", help="one ticket").add_argument("number")
    lst = tsub.add_parser("list", help="tickets, newest first")
    lst.add_argument("--contract")
    lst.add_argument("--limit", type=int, default=20)
    for p in tsub.choices.values():
        _api_options(p, settings)
    ticket.set_defaults(func=hotline.cmd_ticket)


def _contracts_parser(sub: argparse._SubParsersAction, settings: Settings) -> None:  # type: ignore[type-arg]
    contracts = sub.add_parser("contracts", help="contract commands")
    csub = contracts.add_subparsers(dest="action", required=True)
    imp = csub.add_parser("import", help="import a JSON or YAML list of contracts")
    imp.add_argument("file")
    _api_options(imp, settings)
    contracts.set_defaults(func=hotline.cmd_contracts)


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    settings = settings or Settings.from_env()
    parser = argparse.ArgumentParser(prog="backupplus", description="Backup+ conferencing resource broker")
    parser.add_argument("--log-level", default=settings.log_level)
    parser.add_argument("--log-format", choices=["text", "json"], default=settings.log_format,
                        help="text (readable) or json (one object a line); default $BACKUPPLUS_LOG_FORMAT or text")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub, settings)
    _outage_parser(sub, settings)
    _ticket_parser(sub, settings)
    _contracts_parser(sub, settings)
    secrets_cli.add_parser(sub)
    sub.add_parser("media", help="run a standalone media node (see `backupplus media --help`)", add_help=False)
    sub.add_parser("loadtest", help="run the locust load test (see `backupplus loadtest --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "media":
        from media.server import main as media_main

        return media_main(argv[1:])
    if argv and argv[0] == "loadtest":
        from loadtests.runner import main as loadtest_main

        return loadtest_main(argv[1:])
    try:
        settings = Settings.from_env()
        args = build_parser(settings).parse_args(argv)
        secrets = [*settings.operator_tokens, settings.token or "", getattr(args, "webhook_secret", None) or "",
                   getattr(args, "turn_secret", None) or ""]
        for optional in (settings.webhook_secret, settings.metrics_token, settings.turn_secret):
            if optional is not None:
                secrets.append(optional.get_secret_value())
        logsetup.configure(args.log_level, args.log_format, secrets=secrets)
        return int(args.func(args))
    except hotline.ApiError as exc:
        return hotline.report_api_error(exc)
    except ValidationError as exc:
        return _report_bad_settings(exc)


def _report_bad_settings(exc: ValidationError) -> int:
    """A configuration error, said plainly and without echoing the values (one may be a secret)."""
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        print(f"backupplus: bad setting {where}: {error['msg']}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
