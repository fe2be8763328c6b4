"""The CLI as a user runs it: `serve --demo` with its own private Redis, then the hotline commands."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from infra.redisproc import free_port

pytestmark = pytest.mark.slow


def _cli(*args: str, api: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backupplus.cli", *args, "--api", api, "--token", token],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backupplus.cli", "serve", "--demo", "--port", str(port), "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    info: dict[str, str] = {"api": f"http://127.0.0.1:{port}"}
    lines = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline and "join" not in info:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"operator token.*: (\S+)$", line):
            info["token"] = m.group(1)
        if m := re.search(r"redis-server on redis://127\.0\.0\.1:(\d+)", line):
            info["redis_port"] = m.group(1)
        if m := re.search(r"join link: (\S+)$", line):
            info["join"] = m.group(1)
    assert "join" in info and "token" in info, "".join(lines)
    try:
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_serve_demo_then_hotline_cli(demo_server: dict[str, str], tmp_path: Path) -> None:
    api, token = demo_server["api"], demo_server["token"]
    r = _cli("outage", "list", "--state", "active", "--json", api=api, token=token)
    assert r.returncode == 0, r.stderr
    outages = json.loads(r.stdout)
    assert len(outages) == 1 and outages[0]["capacity"]["video"] == 10
    demo_id = outages[0]["id"]
    assert demo_server["join"].startswith(f"{api}/join/")

    today = date.today()
    (tmp_path / "contracts.yaml").write_text(
        f"""
- number: CLI-1
  client: {{company: Mairie de Test, wifi_password: secret}}
  start_date: {today - timedelta(days=10)}
  term_years: 1
  status: active
  equipment:
    - {{serial: MCU-9, brand: Poly, model: RMX, kind: video_bridge, warranty_until: {today + timedelta(days=300)}}}
    - {{serial: TV-1, brand: Sony, model: Bravia, kind: other, warranty_until: {today + timedelta(days=300)}}}
"""
    )
    r = _cli("contracts", "import", str(tmp_path / "contracts.yaml"), api=api, token=token)
    assert r.returncode == 0 and "imported CLI-1" in r.stdout, r.stderr
    # clause 3-3: what every request must say; without a terminal to ask on, the missing flags are named
    r = _cli("outage", "declare", "--contract", "CLI-1", "--serial", "MCU-9", "--site", "Mairie", api=api, token=token)
    assert r.returncode == 1 and "--contact, --description" in r.stderr, r.stderr
    intake = ["--site", "Mairie", "--contact", "M. Dupont 0600", "--description", "Le pont ne répond plus"]
    r = _cli("outage", "declare", "--contract", "CLI-1", "--serial", "TV-1", *intake, api=api, token=token)
    assert r.returncode == 1 and "not_eligible" in r.stderr and "equipment_not_videoconference" in r.stderr
    refused_ticket = re.search(r"ticket (BP-\d{4}-\d{6})", r.stderr)
    assert refused_ticket, r.stderr
    r = _cli("ticket", "show", refused_ticket.group(1), api=api, token=token)
    assert r.returncode == 0 and "refused: not_eligible (equipment_not_videoconference)" in r.stdout, r.stdout
    r = _cli("outage", "declare", "--contract", "CLI-1", "--serial", "MCU-9", "--priority", "medium",
             "--model", "RMX 4000", *intake, api=api, token=token)
    assert r.returncode == 0, r.stderr
    assert "note: model given as 'RMX 4000', the contract says 'RMX'" in r.stdout
    new_id = re.search(r"^(o-[0-9a-f]{12})", r.stdout, re.MULTILINE)
    assert new_id, r.stdout
    r = _cli("outage", "show", new_id.group(1), api=api, token=token)
    assert "video 0/10" in r.stdout and "audio 0/8" in r.stdout and "not acknowledged" in r.stdout
    r = _cli("outage", "ack", new_id.group(1), "--by", "Claire", api=api, token=token)
    assert r.returncode == 0 and "by Claire (in time)" in r.stdout, r.stdout
    r = _cli("outage", "extend", new_id.group(1), "2099-01-05T12:00:00+01:00", api=api, token=token)
    assert r.returncode == 0 and "planned end: 2099-01-05T12:00:00+01:00" in r.stdout, r.stderr
    r = _cli("outage", "extend", new_id.group(1), "none", api=api, token=token)
    assert r.returncode == 0 and "planned end: none" in r.stdout, r.stderr
    r = _cli("outage", "events", new_id.group(1), api=api, token=token)
    assert [line.split()[2] for line in r.stdout.splitlines()] == [
        "declared", "acknowledged", "planned_end_set", "planned_end_cleared"], r.stdout + r.stderr
    r = _cli("outage", "restore", demo_id, api=api, token=token)
    assert r.returncode == 0 and "restored" in r.stdout
    r = _cli("outage", "restore", demo_id, api=api, token=token)
    assert r.returncode == 1 and "outage_not_active" in r.stderr
    r = _cli("outage", "list", api=api, token="wrong")
    assert r.returncode == 1 and "401" in r.stderr


def test_serve_stops_its_private_redis(tmp_path: Path) -> None:
    """Also with a relative state directory, as `make demo` uses (.state)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backupplus.cli", "serve", "--no-media", "--port", str(port), "--state-dir", "state"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    assert proc.stdout is not None
    redis_port = None
    for _ in range(20):
        line = proc.stdout.readline()
        if m := re.search(r"redis://127\.0\.0\.1:(\d+)", line):
            redis_port = int(m.group(1))
        if "console:" in line:
            break
    assert redis_port is not None
    assert (tmp_path / "state" / "redis" / "redis.log").is_file()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", redis_port), timeout=1).close()


def test_generated_operator_tokens_are_safe_on_a_command_line() -> None:
    """A token printed by `serve` is passed back as `--token TOKEN`: one starting with "-" (a random
    base64url token does, 1 time in 32) was read by argparse as an option. Seen once in CI."""
    from api.auth import OPERATOR_TOKEN_PREFIX, new_operator_token
    from backupplus.cli import build_parser

    tokens = {new_operator_token() for _ in range(500)}
    assert len(tokens) == 500
    parser = build_parser()
    for token in tokens:
        assert token.startswith(OPERATOR_TOKEN_PREFIX) and len(token) >= 36
        args = parser.parse_args(["outage", "list", "--api", "http://x", "--token", token])
        assert args.token == token
    # the failure this prevents, with the token format used before
    with pytest.raises(SystemExit):
        parser.parse_args(["outage", "list", "--token", "-J1-5hmp8HjTtVXT8j1UDyjiY97-cjmP"])
