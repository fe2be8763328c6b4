"""The key ring (quotas.secret): one HKDF key per purpose from the root, and rotation with a grace
period, through the real app and the real CLI on a real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from api.appkeys import KEYS
from api.auth import sign_join_token, verify_join_token
from infra.redisproc import PrivateRedis
from quotas import keys, secret
from quotas.secret import PURPOSES, KeyRing, derive_key

from .api_helpers import AUTH, bearer, new_conference, open_outage
from .api_helpers import api_client as make_client


def test_every_purpose_has_its_own_key() -> None:
    root = b"0123456789abcdef" * 4
    derived = {purpose: derive_key(root, purpose) for purpose in PURPOSES}
    assert len(set(derived.values())) == len(PURPOSES), "two purposes share a key"
    assert all(len(k) == 32 and root[:32] != k for k in derived.values())
    assert derive_key(root, "join") == derive_key(bytes(root), "join")  # deterministic: every process agrees
    assert derive_key(b"another root" * 4, "join") != derived["join"]
    # a join token is no participant token, even over the same subject
    ring = KeyRing.single(root)
    token = sign_join_token(ring.signing_key("join"), "c-1")
    assert verify_join_token(ring.accepted_keys("join"), token) == "c-1"
    assert verify_join_token(ring.accepted_keys("participant"), token) is None


async def test_old_key_verifies_during_grace_not_after(redis: aioredis.Redis) -> None:
    before = await secret.load_keyring(redis)
    old_token = sign_join_token(before.signing_key("join"), "c-1")
    rotated = await secret.rotate(redis, grace_s=60, activation_s=5)
    new_root, old_root = rotated.roots
    assert old_root.root == before.roots[0].root and new_root.root != old_root.root
    start, ends = new_root.not_before_ms, old_root.until_ms
    assert ends == start + 60_000
    # before activation every process already accepts the new key but still signs with the old one
    assert rotated.signing_root(start - 1) is old_root
    assert verify_join_token(rotated.accepted_keys("join", start - 1), old_token) == "c-1"
    # after activation: minted with the new key; the old token still verifies during the grace period
    assert rotated.signing_root(start) is new_root
    new_token = sign_join_token(rotated.signing_key("join", start), "c-1")
    assert new_token != old_token
    assert verify_join_token(rotated.accepted_keys("join", ends - 1), old_token) == "c-1"
    # and not after it
    assert verify_join_token(rotated.accepted_keys("join", ends), old_token) is None
    assert verify_join_token(rotated.accepted_keys("join", ends), new_token) == "c-1"
    # every process reads the same ring
    assert await secret.load_keyring(redis) == rotated
    # a second rotation drops nothing still in grace, and a root past its grace is dropped
    again = await secret.rotate(redis, grace_s=0, activation_s=0)
    assert [r.id for r in again.roots] == ["k3", "k2", "k1"]
    assert all(r.until_ms is not None for r in again.roots[1:])


async def test_a_ring_starts_from_the_secret_of_earlier_versions(redis: aioredis.Redis) -> None:
    await redis.set(keys.SECRET, "ab" * 32)
    ring = await secret.load_keyring(redis)
    assert ring.roots[0].root == ("ab" * 32).encode()


async def _status_of_join(client: Any, conf_id: str, token: str) -> int:
    r = await client.post(f"/v1/conferences/{conf_id}/participants", json={"display_name": "P", "kind": "audio"},
                          headers=bearer(token))
    return int(r.status)


async def test_rotation_through_the_app_and_the_cli(redis: aioredis.Redis, redis_url: str) -> None:
    async with make_client(redis_url) as client:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        old_link = conf["join_token"]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "backupplus.cli", "secrets", "rotate", "--redis-url", redis_url,
             "--grace", "10", "--activation", "0"],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        ring = await secret.load_keyring(redis)
        assert "rotated: key k2" in done.stdout
        assert all(r.root.decode() not in done.stdout + done.stderr for r in ring.roots)  # no secret printed
        store = client.server.app[KEYS]
        await store.reload()  # what the app's refresher does every 2 s
        # a new link is minted with the new key, the old one still admits during the grace period
        r = await client.get(f"/v1/conferences/{conf['id']}", headers=AUTH)
        new_link = (await r.json())["join_token"]
        assert new_link != old_link
        assert await _status_of_join(client, conf["id"], old_link) == 201
        assert await _status_of_join(client, conf["id"], new_link) == 201
        old_until = ring.roots[1].until_ms
        assert old_until is not None
        seconds, micros = await redis.time()  # the ring's times are Redis's
        assert old_until > seconds * 1000 + micros // 1000, "the checks above ran after the grace period"
        await asyncio.sleep((old_until - seconds * 1000 - micros // 1000) / 1000 + 0.3)  # past the grace period
        assert await _status_of_join(client, conf["id"], old_link) == 401
        assert await _status_of_join(client, conf["id"], new_link) == 201



def test_rotate_finds_the_private_redis_of_a_state_dir(tmp_path: Path) -> None:
    """``--state-dir``: the port and password of serve's own redis-server come from its files."""
    private = PrivateRedis(tmp_path / "state").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
        command = [sys.executable, "-m", "backupplus.cli", "secrets"]
        rotated = subprocess.run([*command, "rotate", "--activation", "3600", "--state-dir", str(tmp_path / "state")], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
        assert rotated.returncode == 0, rotated.stderr
        status = subprocess.run([*command, "status", "--state-dir", str(tmp_path / "state")], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert status.returncode == 0, status.stderr
        assert "key k2: accepted" in status.stdout and "key k1: signs" in status.stdout  # k2 signs in an hour
        password = (tmp_path / "state" / "redis.pass").read_text().strip()
        assert password not in rotated.stdout + status.stdout
    finally:
        private.stop()


async def test_shared_secret_is_the_signing_root(redis: aioredis.Redis) -> None:
    """Code written against the single secret of earlier versions keeps working (it gets the root that
    signs now); every purpose's key stays distinct from it."""
    root = await secret.shared_secret(redis)
    ring = await secret.load_keyring(redis)
    assert root == ring.signing_root().root
    assert all(derive_key(root, p) != root for p in PURPOSES)
