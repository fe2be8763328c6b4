"""The key ring every broker process and media node shares: root secrets kept in Redis, and one key
per purpose derived from the root with HKDF-SHA256 (join tokens, participant tokens, stream tickets,
internal calls, TURN credentials), so that a key leaked or misused for one purpose is no key for
another.

Rotation (``backupplus secrets rotate``, ``rotate`` here) adds a new root that every process accepts
at once but signs with only ``activation_s`` later (by then every process has reloaded the ring, so
no process refuses what another one minted); the old root stays accepted for ``grace_s`` more, then
is dropped. Processes reload the ring from Redis every ``REFRESH_S`` (``KeyStore.fresh``).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from quotas import keys

Purpose = Literal["join", "participant", "stream", "internal", "turn"]
PURPOSES: tuple[Purpose, ...] = ("join", "participant", "stream", "internal", "turn")
HKDF_SALT = b"backupplus/keyring/v1"
REFRESH_S = 2.0  # how stale a process's copy of the ring may get
DEFAULT_ACTIVATION_S = 10.0  # > REFRESH_S with a margin: every process accepts a new root before any signs with it
DEFAULT_GRACE_S = 24 * 3600.0


@lru_cache(maxsize=64)
def derive_key(root: bytes, purpose: Purpose) -> bytes:
    """The 32-byte key of ``purpose`` under ``root`` (HKDF-SHA256, the purpose in ``info``)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=f"backupplus:{purpose}".encode())
    return hkdf.derive(root)


@dataclass(frozen=True)
class RootKey:
    """One root secret: signs from ``not_before_ms``, accepted until ``until_ms`` (None: no end)."""

    id: str
    root: bytes
    not_before_ms: int = 0
    until_ms: int | None = None

    def accepted_at(self, now_ms: int) -> bool:
        return self.until_ms is None or now_ms < self.until_ms

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "root": self.root.decode(), "not_before_ms": self.not_before_ms,
                "until_ms": self.until_ms}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RootKey:
        until = raw.get("until_ms")
        return cls(str(raw["id"]), str(raw["root"]).encode(), int(raw.get("not_before_ms", 0)),
                   None if until is None else int(until))


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class KeyRing:
    """The roots, newest first. Signing uses the newest root already active; verifying tries every
    root still accepted (at most a few: an HMAC each)."""

    roots: tuple[RootKey, ...]

    def signing_root(self, now_ms: int | None = None) -> RootKey:
        now = _now_ms() if now_ms is None else now_ms
        active = [r for r in self.roots if r.not_before_ms <= now and r.accepted_at(now)]
        if not active:  # only a not-yet-active root (clock skew): sign with the newest
            return self.roots[0]
        return max(active, key=lambda r: r.not_before_ms)

    def signing_key(self, purpose: Purpose, now_ms: int | None = None) -> bytes:
        """The key to sign (mint) with for ``purpose``."""
        return derive_key(self.signing_root(now_ms).root, purpose)

    def accepted_keys(self, purpose: Purpose, now_ms: int | None = None) -> list[bytes]:
        """Every key a signature for ``purpose`` may be checked against: the signing one first."""
        now = _now_ms() if now_ms is None else now_ms
        first = self.signing_root(now)
        rest = [r for r in self.roots if r is not first and r.accepted_at(now)]
        return [derive_key(r.root, purpose) for r in (first, *rest)]

    def to_json(self) -> str:
        return json.dumps({"roots": [r.to_json() for r in self.roots]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        data = json.loads(text)
        roots = tuple(RootKey.from_json(r) for r in data["roots"])
        if not roots:
            raise ValueError("the key ring in Redis has no root")
        return cls(roots)

    @classmethod
    def single(cls, root: bytes, key_id: str = "k1") -> KeyRing:
        """A ring of one root (tests, tools)."""
        return cls((RootKey(key_id, root),))

    def describe(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """What ``secrets status`` prints: ids and times, never a secret."""
        now = _now_ms() if now_ms is None else now_ms
        signing = self.signing_root(now)
        return [{"id": r.id, "signing": r is signing, "not_before_ms": r.not_before_ms, "until_ms": r.until_ms,
                 "accepted": r.accepted_at(now)} for r in self.roots]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def load_keyring(redis: aioredis.Redis) -> KeyRing:
    """The ring; the first process to ask creates it (SET NX), from the single secret of earlier
    versions (``bp:secret``) when there is one, so tokens minted before the upgrade stay valid."""
    raw = await redis.get(keys.KEYRING)
    if raw is None:
        legacy = await redis.get(keys.SECRET)
        root = _text(legacy) if legacy is not None else secrets.token_hex(32)
        ring = KeyRing((RootKey("k1", root.encode()),))
        await redis.set(keys.KEYRING, ring.to_json(), nx=True)
        raw = await redis.get(keys.KEYRING)
        if raw is None:  # pragma: no cover - deleted between the two calls
            raise RuntimeError("the key ring vanished from Redis")
    return KeyRing.from_json(_text(raw))


async def shared_secret(redis: aioredis.Redis) -> bytes:
    """The root that signs now (the single secret of earlier versions). Kept for code written against
    it; new code takes a key of its purpose: ``(await load_keyring(redis)).signing_key(purpose)``."""
    return (await load_keyring(redis)).signing_root().root


async def _redis_now_ms(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def rotate(
    redis: aioredis.Redis, *, grace_s: float = DEFAULT_GRACE_S, activation_s: float = DEFAULT_ACTIVATION_S
) -> KeyRing:
    """Adds a new root (signing ``activation_s`` from now, Redis's clock), keeps the current one
    accepted ``grace_s`` after that, drops roots whose grace is over. Atomic (WATCH/MULTI)."""
    if grace_s < 0 or activation_s < 0:
        raise ValueError("grace and activation must be >= 0")
    await load_keyring(redis)  # make sure there is a ring to rotate
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(keys.KEYRING)
                ring = KeyRing.from_json(_text(await pipe.get(keys.KEYRING)))
                now = await _redis_now_ms(redis)
                start = now + int(activation_s * 1000)
                ends = start + int(grace_s * 1000)
                kept = [
                    RootKey(r.id, r.root, r.not_before_ms, ends if r.until_ms is None else min(r.until_ms, ends))
                    for r in ring.roots
                    if r.accepted_at(now)
                ]
                number = 1 + max((int(r.id[1:]) for r in ring.roots if r.id[1:].isdigit()), default=0)
                new = KeyRing((RootKey(f"k{number}", secrets.token_hex(32).encode(), start), *kept))
                pipe.multi()
                pipe.set(keys.KEYRING, new.to_json())
                await pipe.execute()
                return new
            except aioredis.WatchError:  # pragma: no cover - two rotations at once: try again
                continue


@dataclass
class KeyStore:
    """A process's copy of the ring, reloaded from Redis when older than ``refresh_s``.
    ``ring`` is for synchronous code (kept fresh by whoever awaits ``fresh``: the API's refresher,
    the media node's handlers)."""

    redis: aioredis.Redis
    ring: KeyRing
    refresh_s: float = REFRESH_S
    loaded_at: float = field(default_factory=time.monotonic)

    @classmethod
    async def load(cls, redis: aioredis.Redis, refresh_s: float = REFRESH_S) -> KeyStore:
        return cls(redis, await load_keyring(redis), refresh_s)

    async def reload(self) -> KeyRing:
        self.ring = await load_keyring(self.redis)
        self.loaded_at = time.monotonic()
        return self.ring

    async def fresh(self) -> KeyRing:
        """The ring, reloaded first when it is older than ``refresh_s``."""
        if time.monotonic() - self.loaded_at >= self.refresh_s:
            return await self.reload()
        return self.ring

    def signing_key(self, purpose: Purpose) -> bytes:
        return self.ring.signing_key(purpose)

    def accepted_keys(self, purpose: Purpose) -> list[bytes]:
        return self.ring.accepted_keys(purpose)
