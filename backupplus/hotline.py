"""The hotline's CLI commands (``backupplus outage …``, ``backupplus contracts import``): a client of the
HTTP API, so it behaves exactly as the console and any other tool."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
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
    acked = (f"acknowledged {o['acknowledged_at']} by {o.get('acknowledged_by')}"
             f" ({'in time' if o.get('ack_met') else 'late'})" if o.get("acknowledged_at") else "not acknowledged")
    print(f"  taken at {o['taken_at']}  ack by {o['ack_deadline']} ({acked})")
    overdue = "  OVERDUE" if o.get("restore_overdue") else ""
    print(f"  restore by {o['restore_deadline']}{overdue}")
    if o["state"] == "active":
        print(f"  planned end: {o['window_ends_at'] or 'none (Backup+ lasts until the server is restored)'}")
    else:
        print(f"  ended {o.get('ended_at')} ({o.get('end_reason') or 'restored'})")
    print(f"  ports: video {use['video']}/{cap['video']} (≤{cap['max_video_height']}p), "
          f"audio {use['audio']}/{cap['audio']}; conferences: {len(o['conferences'])}")
    for field, what in (ticket.get("mismatch") or {}).items():
        known = what.get("contract") or what.get("equipment")
        print(f"  note: {field} given as {what.get('given')!r}, the contract says {known!r}")


# Clause 3-3: what every request must say, asked for on a terminal when a flag is missing.
_INTAKE_PROMPTS = {
    "site": "Site concerned: ",
    "contact": "On-site contact (name, phone): ",
    "description": "Detailed description of the problem: ",
}


def _intake(args: argparse.Namespace) -> dict[str, str]:
    given = {k: (getattr(args, k) or "").strip() for k in _INTAKE_PROMPTS}
    if sys.stdin.isatty():
        for field, prompt in _INTAKE_PROMPTS.items():
            while not given[field]:
                given[field] = input(prompt).strip()
    missing = [f"--{k}" for k, v in given.items() if not v]
    if missing:
        raise SystemExit(f"backupplus outage declare: clause 3-3 asks every request for {', '.join(missing)}")
    return given


def _declare_body(args: argparse.Namespace) -> dict[str, Any]:
    ticket: dict[str, Any] = {"priority": args.priority, **_intake(args)}
    for optional in ("company", "model"):
        if getattr(args, optional):
            ticket[optional] = getattr(args, optional)
    body: dict[str, Any] = {"contract": args.contract, "serial": args.serial, "ticket": ticket}
    if args.reported_at:
        body["reported_at"] = args.reported_at
    return body


def _outage_request(args: argparse.Namespace) -> Any:
    if args.action == "declare":
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
        return call(args, "POST", "/v1/outages", _declare_body(args), headers)
    if args.action == "list":
        return call(args, "GET", "/v1/outages" + (f"?state={args.state}" if args.state else ""))
    if args.action == "show":
        return call(args, "GET", f"/v1/outages/{args.id}")
    if args.action == "restore":
        return call(args, "POST", f"/v1/outages/{args.id}/restore", {})
    if args.action == "ack":
        return call(args, "POST", f"/v1/outages/{args.id}/acknowledge", {"by": args.by})
    if args.action == "extend":
        when = None if args.window_ends_at.lower() in ("none", "null", "") else args.window_ends_at
        return call(args, "POST", f"/v1/outages/{args.id}/extend", {"window_ends_at": when})
    if args.action == "events":
        query = urllib.parse.urlencode({"after": args.after, "limit": args.limit})
        return call(args, "GET", f"/v1/outages/{args.id}/events?{query}")
    raise SystemExit(2)  # pragma: no cover - argparse guards the choices


def print_event(e: dict[str, Any]) -> None:
    at = e.get("at_iso") or e.get("at", "")
    rest = "  ".join(f"{k}={v}" for k, v in e.items() if k not in ("id", "type", "at", "at_iso"))
    print(f"{e['id']}  {at}  {e['type']:<20} {rest}")


def cmd_outage(args: argparse.Namespace) -> int:
    result = _outage_request(args)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.action == "events":
        for e in result:
            print_event(e)
        if not result:
            print("no events")
    elif isinstance(result, list):
        if not result:
            print("no outages")
        for o in result:
            print_outage(o)
    else:
        print_outage(result)
    return 0


def print_ticket(t: dict[str, Any]) -> None:
    outcome = (f"outage {t.get('outage_id')}" if t.get("outcome") == "outage" else
               f"refused: {t.get('code')}" + (f" ({t['reason']})" if t.get("reason") else ""))
    print(f"{t['number']}  {t.get('received_at')}  contract {t.get('contract')}  serial {t.get('serial')}  {outcome}")
    if t.get("site") or t.get("contact"):
        print(f"  site {t.get('site')}  contact {t.get('contact')}  priority {t.get('priority')}")
    if t.get("description"):
        print(f"  {t['description']}")


def cmd_ticket(args: argparse.Namespace) -> int:
    if args.action == "show":
        result = call(args, "GET", f"/v1/tickets/{urllib.parse.quote(args.number, safe='')}")
    else:
        query = urllib.parse.urlencode({k: v for k, v in (("contract", args.contract), ("limit", args.limit)) if v})
        result = call(args, "GET", f"/v1/tickets?{query}")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for t in result if isinstance(result, list) else [result]:
        print_ticket(t)
    return 0


def cmd_contracts(args: argparse.Namespace) -> int:
    try:
        contracts = load_contracts_file(Path(args.file))
    except ContractFileError as exc:
        print(f"backupplus contracts import: {exc}", file=sys.stderr)
        return 1
    for contract in contracts:
        call(args, "PUT", f"/v1/contracts/{urllib.parse.quote(contract.number, safe='')}",
             contract.model_dump(mode="json"))
        print(f"imported {contract.number} ({contract.client.company}, {len(contract.equipment)} equipment)")
    return 0


def report_api_error(exc: ApiError) -> int:
    """Prints a problem the way a person reads it (code, reason, field errors); the exit status."""
    code = exc.problem.get("code", "")
    reason = exc.problem.get("reason")
    extra = f" ({reason})" if reason else ""
    print(f"backupplus: {exc} [{exc.status} {code}{extra}]", file=sys.stderr)
    if exc.problem.get("ticket_number"):
        print(f"  the request was recorded as ticket {exc.problem['ticket_number']}", file=sys.stderr)
    for err in exc.problem.get("errors", []):
        print(f"  - {'.'.join(map(str, err.get('loc', [])))}: {err.get('msg')}", file=sys.stderr)
    return 1
