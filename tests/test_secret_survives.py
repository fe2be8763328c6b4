"""A secret that survives (issue 14, item 6): the key ring's root comes from the configuration or
serve's state directory, is never minted silently into a store that holds data, is written back by
running processes when Redis loses it, and a ring made from another secret is refused at start and
reported by ``/readyz``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from api.auth import sign_join_token, verify_join_token
from backupplus.serve import _state_dir_secret
from infra.settings import Settings
from quotas import keys
from quotas.secret import (
    KeyRing,
    KeyRingMismatch,
    KeyRingMissing,
    KeyStore,
    RootKey,
    load_keyring,
    rotate,
    seed_fingerprint,
)

SEED_A = b"a" * 20 + b"0123456789abcdef"
SEED_B = b"b" * 20 + b"0123456789abcdef"


async def test_a_configured_root_reseeds_a_lost_ring_and_old_links_stay_valid(redis: aioredis.Redis) -> None:
    ring = await load_keyring(redis, SEED_A)
    link = sign_join_token(ring.signing_key("join"), "c-1")
    await redis.set(keys.OUTAGES + ":probe", "1")
    await redis.delete(keys.KEYRING)  # lost: eviction, a failover, an operator
    again = await load_keyring(redis, SEED_A)
    assert verify_join_token(again.accepted_keys("join"), link) == "c-1"
    assert again.seed_fp == seed_fingerprint(SEED_A)


async def test_no_root_is_minted_into_a_store_that_holds_data(redis: aioredis.Redis) -> None:
    first = await load_keyring(redis)  # an empty store: a new root is fine
    await redis.sadd(keys.OUTAGES, "o-1")
    assert await load_keyring(redis) == first  # the ring is there: read, not minted
    await redis.delete(keys.KEYRING)
    with pytest.raises(KeyRingMissing, match="BACKUPPLUS_SECRET"):
        await load_keyring(redis)
    assert await redis.get(keys.KEYRING) is None  # nothing written


async def test_the_earlier_single_secret_is_adopted(redis: aioredis.Redis) -> None:
    legacy = "f" * 64
    await redis.set(keys.SECRET, legacy)
    await redis.sadd(keys.OUTAGES, "o-1")
    ring = await load_keyring(redis)
    assert ring.roots[0].root == legacy.encode()


async def test_a_ring_from_another_root_is_refused(redis: aioredis.Redis) -> None:
    await load_keyring(redis, SEED_A)
    with pytest.raises(KeyRingMismatch) as info:
        await load_keyring(redis, SEED_B)
    text = str(info.value)
    assert seed_fingerprint(SEED_B) in text and seed_fingerprint(SEED_A) in text
    assert SEED_A.decode() not in text and SEED_B.decode() not in text  # fingerprints only, never a secret


async def test_a_rotated_ring_still_belongs_to_its_configured_root(redis: aioredis.Redis) -> None:
    await load_keyring(redis, SEED_A)
    await rotate(redis, grace_s=0, activation_s=0)
    await rotate(redis, grace_s=0, activation_s=0)  # the seed's own root is gone by now
    ring = await load_keyring(redis, SEED_A)
    assert all(r.root != SEED_A for r in ring.roots)
    with pytest.raises(KeyRingMismatch):
        await load_keyring(redis, SEED_B)


async def test_running_processes_write_a_lost_ring_back(redis: aioredis.Redis) -> None:
    store = await KeyStore.load(redis)
    link = sign_join_token(store.signing_key("join"), "c-2")
    await redis.sadd(keys.OUTAGES, "o-1")
    await redis.delete(keys.KEYRING)
    await store.reload()
    assert store.written_back == 1 and store.problem is None
    # a broker started afterwards, with no secret configured, reads the survivor's ring
    newcomer = await load_keyring(redis)
    assert verify_join_token(newcomer.accepted_keys("join"), link) == "c-2"


async def test_a_replaced_ring_is_reported_not_adopted(redis: aioredis.Redis) -> None:
    store = await KeyStore.load(redis)
    before = store.ring
    await redis.set(keys.KEYRING, KeyRing((RootKey("k9", b"9" * 64),)).to_json())
    await store.reload()
    assert store.problem is not None and "restart" in store.problem
    assert store.ring == before  # keeps verifying what it signed
    await redis.delete(keys.KEYRING)
    configured = await KeyStore.load(redis, seed=SEED_A)
    await redis.set(keys.KEYRING, KeyRing((RootKey("k1", SEED_B),), seed_fingerprint(SEED_B)).to_json())
    await configured.reload()
    assert configured.problem is not None and seed_fingerprint(SEED_A) in configured.problem


async def test_serve_keeps_its_root_in_the_state_directory(redis_url: str, redis: aioredis.Redis,
                                                          tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, state_dir=tmp_path)
    ring = await load_keyring(redis)  # a store from before the file existed (an upgrade)
    path = await _state_dir_secret(settings)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().strip() == ring.roots[0].root  # adopted, so links sent before stay valid
    seeded = settings.model_copy(update={"secret_file": path})
    assert (await load_keyring(redis, seeded.root_secret())).made_from(path.read_bytes().strip())
    await redis.flushdb()
    fresh_dir = tmp_path / "new"
    fresh_dir.mkdir()
    new_path = await _state_dir_secret(settings.model_copy(update={"state_dir": fresh_dir}))
    assert len(new_path.read_bytes().strip()) == 64 and new_path.read_bytes() != path.read_bytes()


def test_the_root_secret_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret="short")  # type: ignore[arg-type]
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        Settings(secret_file=loose).root_secret()
    loose.chmod(0o600)
    assert Settings(secret_file=loose).root_secret() == b"x" * 40
    with pytest.raises(ValueError, match="cannot read"):
        Settings(secret_file=tmp_path / "absent").root_secret()
