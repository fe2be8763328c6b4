"""``backupplus secrets rotate|status``: the shared key ring (quotas.secret), straight in Redis.

It talks to Redis, not to the HTTP API: rotating keys is for whoever runs the brokers, not for an
operator token. ``--redis-url`` (or $BACKUPPLUS_REDIS_URL) names a shared Redis; ``--state-dir``
finds a running ``serve``'s private redis-server (its port in ``redis.pid``, its password in
``redis.pass``). Nothing printed is a secret: key ids and times only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from infra.redisconn import connect
from infra.redisproc import PASSWORD_FILE, PID_FILE
from quotas import secret


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("secrets", help="the shared key ring: rotate the root secret, show its keys")
    ssub = p.add_subparsers(dest="action", required=True)
    rotate = ssub.add_parser(
        "rotate", help="new root secret: new tokens are signed with it; the old one stays accepted for --grace")
    rotate.add_argument("--grace", type=float, default=secret.DEFAULT_GRACE_S,
                        help=f"seconds the old key stays accepted (default {secret.DEFAULT_GRACE_S:.0f}: 24 h)")
    rotate.add_argument("--activation", type=float, default=secret.DEFAULT_ACTIVATION_S,
                        help="seconds before the new key signs, so every process knows it first "
                             f"(default {secret.DEFAULT_ACTIVATION_S:.0f})")
    ssub.add_parser("status", help="the key ring's key ids, which one signs, until when each is accepted")
    for q in ssub.choices.values():
        q.add_argument("--redis-url", default=None, help="shared Redis (default $BACKUPPLUS_REDIS_URL)")
        q.add_argument("--state-dir", default=None, help="the state directory of a serve running its own Redis")
    p.set_defaults(func=cmd_secrets)


def redis_url_of(args: argparse.Namespace) -> str:
    """The URL to use: --redis-url, $BACKUPPLUS_REDIS_URL, or the private Redis of --state-dir."""
    url = args.redis_url or (None if args.state_dir else os.environ.get("BACKUPPLUS_REDIS_URL"))
    if url:
        return str(url)
    state = Path(args.state_dir or ".state")
    try:
        record = json.loads((state / PID_FILE).read_text())
        password = (state / PASSWORD_FILE).read_text().strip()
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"backupplus secrets: no running serve found in {state} ({type(exc).__name__}); "
            "give --redis-url or --state-dir") from None
    return f"redis://:{quote(password, safe='')}@127.0.0.1:{int(record['port'])}/0"


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _print(ring: secret.KeyRing) -> None:
    for key in ring.describe():
        role = "signs" if key["signing"] else ("accepted" if key["accepted"] else "expired")
        print(f"key {key['id']}: {role}; signs from {_when(key['not_before_ms'] or None)}, "
              f"accepted until {_when(key['until_ms']) if key['until_ms'] else 'further notice'}")


async def _run(args: argparse.Namespace) -> int:
    client = connect(redis_url_of(args), decode_responses=True)
    try:
        if args.action == "rotate":
            ring: Any = await secret.rotate(client, grace_s=args.grace, activation_s=args.activation)
            new = ring.roots[0]
            print(f"rotated: key {new.id} signs from {_when(new.not_before_ms)}; the previous key is "
                  f"accepted until {_when(ring.roots[1].until_ms) if len(ring.roots) > 1 else '-'}")
            print("join links minted before stop working after that: the console (GET /v1/conferences/{id}) "
                  "shows the new ones")
        else:
            ring = await secret.load_keyring(client)
        _print(ring)
        return 0
    finally:
        await client.aclose()


def cmd_secrets(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except OSError as exc:
        print(f"backupplus secrets: {exc}", file=sys.stderr)
        return 1
