"""The hotline's CLI commands (``backupplus outage …``, ``backupplus contracts import``): a client of the
HTTP API, so it behaves exactly as the console and any other tool."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from broker.contracts import ContractFileError, load_contracts_file
from infra.settings import Settings


class ApiError(Exception):
    """The API answered with a problem (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem


def _token(args: argparse.Namespace, settings: Settings) -> str:
    token = args.token or settings.token or min(settings.operator_tokens, default="")
    if not token:
        raise SystemExit("backupplus: no operator token: pass --token or set BACKUPPLUS_TOKEN")
    return token


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """One API request; the decoded JSON answer, ApiError on a problem, SystemExit when unreachable."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(args.api.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {_token(args, Settings.from_env())}")
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


def print_outage(o: dict[str, Any]) -> None:
    cap, use, ticket = o["capacity"], o["in_use"], o["ticket"]
    print(f"{o['id']}  {o['state']:<8}  contract {o['contract']}  serial {o['serial']}  "
          f"ticket {ticket['number']} ({ticket['priority']})")
    print(f"  taken at {o['taken_at']}  ack by {o['ack_deadline']}  restore by {o['restore_deadline']}")
    print(f"  window ends {o['window_ends_at']}")
    print(f"  ports: video {use['video']}/{cap['video']} (≤{cap['max_video_height']}p), "
          f"audio {use['audio']}/{cap['audio']}; conferences: {len(o['conferences'])}")


def _declare_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contract": args.contract,
        "serial": args.serial,
        "ticket": {"priority": args.priority, "site": args.site, "contact": args.contact,
                   "description": args.description},
    }
    if args.reported_at:
        body["reported_at"] = args.reported_at
    return body


def cmd_outage(args: argparse.Namespace) -> int:
    if args.action == "declare":
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
        result = call(args, "POST", "/v1/outages", _declare_body(args), headers)
    elif args.action == "list":
        result = call(args, "GET", "/v1/outages" + (f"?state={args.state}" if args.state else ""))
    elif args.action == "show":
        result = call(args, "GET", f"/v1/outages/{args.id}")
    elif args.action == "restore":
        result = call(args, "POST", f"/v1/outages/{args.id}/restore", {})
    elif args.action == "extend":
        result = call(args, "POST", f"/v1/outages/{args.id}/extend", {"window_ends_at": args.window_ends_at})
    else:  # pragma: no cover - argparse guards the choices
        raise SystemExit(2)
    if args.json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, list):
        if not result:
            print("no outages")
        for o in result:
            print_outage(o)
    else:
        print_outage(result)
    return 0


def cmd_contracts(args: argparse.Namespace) -> int:
    try:
        contracts = load_contracts_file(Path(args.file))
    except ContractFileError as exc:
        print(f"backupplus contracts import: {exc}", file=sys.stderr)
        return 1
    for contract in contracts:
        call(args, "PUT", f"/v1/contracts/{contract.number}", contract.model_dump(mode="json"))
        print(f"imported {contract.number} ({contract.client.company}, {len(contract.equipment)} equipment)")
    return 0


def report_api_error(exc: ApiError) -> int:
    """Prints a problem the way a person reads it (code, reason, field errors); the exit status."""
    code = exc.problem.get("code", "")
    reason = exc.problem.get("reason")
    extra = f" ({reason})" if reason else ""
    print(f"backupplus: {exc} [{exc.status} {code}{extra}]", file=sys.stderr)
    for err in exc.problem.get("errors", []):
        print(f"  - {'.'.join(map(str, err.get('loc', [])))}: {err.get('msg')}", file=sys.stderr)
    return 1
