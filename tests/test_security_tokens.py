"""Operator tokens (issue 15): short ones refused at start, ``--demo`` prints a generated token only,
SHA-256 hashes accepted in their place; and a test switch that is no setting any more."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infra.redisproc import RedisServer

from .api_helpers import api_client, bearer, join, new_conference, open_outage
from .broker_process import running_broker


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    return {**env, **extra}


def test_a_short_operator_token_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backupplus.cli", "serve", "--no-media", "--redis-url", "redis://127.0.0.1:1/0",
         "--state-dir", str(tmp_path / "state")],
        env=_clean_env(BACKUPPLUS_OPERATOR_TOKENS="op-secret-123"), capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "shorter than 32 characters" in done.stderr
    assert "op-secret-123" not in done.stdout + done.stderr


def _get(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers=bearer(token))
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_demo_prints_a_generated_token_never_a_configured_one(redis_server: RedisServer, tmp_path: Path) -> None:
    configured = "bpo_" + secrets.token_urlsafe(32)
    with running_broker(redis_server.url, tmp_path, serve_args=("--demo",),
                        env={"BACKUPPLUS_OPERATOR_TOKENS": configured}) as broker:
        for _ in range(100):  # the demo data is printed after /healthz answers
            out = broker.output.read_text()
            if "join link" in out:
                break
            time.sleep(0.1)
        assert configured not in broker.log()
        printed = re.search(r"operator token.*: (\S+)$", out, re.MULTILINE)
        assert printed is not None, out
        assert printed.group(1) != configured and len(printed.group(1)) >= 32
        assert _get(broker.url + "/v1/outages", printed.group(1)) == 200  # it works
        assert _get(broker.url + "/v1/outages", configured) == 200  # and so does the configured one


async def test_operator_token_given_as_its_sha256(redis_url: str) -> None:
    token = "bpo_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    async with api_client(redis_url, operator_token_hashes=frozenset({digest})) as client:
        r = await client.get("/v1/outages", headers=bearer(token))
        assert r.status == 200
        assert (await client.get("/v1/outages", headers=bearer(digest))).status == 401  # the hash is no token
        # the live feed's stream ticket works for a token known only by its hash
        r = await client.post("/v1/events/tickets", headers=bearer(token))
        assert r.status == 201
        ticket = (await r.json())["ticket"]
        async with client.get("/v1/events", params={"ticket": ticket}) as stream:
            assert stream.status == 200


async def test_the_cap_overshoot_switch_is_gone(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``BACKUPPLUS_UNSAFE_CAP_OVERSHOOT=3`` once granted 13 of 10 video ports; now it does nothing."""
    monkeypatch.setenv("BACKUPPLUS_UNSAFE_CAP_OVERSHOOT", "3")
    async with api_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        for i in range(10):
            assert (await join(client, conf, f"v{i}", "video", downgrade=False))["kind"] == "video"
        r = await client.post(f"/v1/conferences/{conf['id']}/participants", headers=bearer(conf["join_token"]),
                              json={"display_name": "v10", "kind": "video", "downgrade": False})
        assert r.status == 409 and (await r.json())["code"] == "capacity_exhausted"
