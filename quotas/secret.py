"""The key ring every broker process and media node shares: root secrets kept in Redis, and one key
per purpose derived from the root with HKDF-SHA256 (join tokens, participant tokens, stream tickets,
internal calls, TURN credentials), so that a key leaked or misused for one purpose is no key for
another.

Rotation (``backupplus secrets rotate``, ``rotate`` here) adds a new root that every process accepts
at once but signs with only ``activation_s`` later (by then every process has reloaded the ring, so
no process refuses what another one minted); the old root stays accepted for ``grace_s`` more, then
is dropped. Processes reload the ring from Redis every ``REFRESH_S`` (``KeyStore.fresh``).

Where the first root comes from (issue 14, "a secret that survives"): the configuration
(``BACKUPPLUS_SECRET`` or ``BACKUPPLUS_SECRET_FILE``; ``serve`` keeps one in its state directory for
its private Redis), which seeds the ring and re-seeds it when Redis lost it; or, with none configured,
a root minted only into a store that holds no Backup+ data yet. A running process writes its copy of
a ring that vanished from Redis back, and a ring made from another seed is refused at start and
reported by ``/readyz``, so brokers never sign with different secrets without anyone knowing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from quotas import keys

log = logging.getLogger("backupplus.secret")
Purpose = Literal["join", "participant", "stream", "internal", "turn"]
PURPOSES: tuple[Purpose, ...] = ("join", "participant", "stream", "internal", "turn")
HKDF_SALT = b"backupplus/keyring/v1"
REFRESH_S = 2.0  # how stale a process's copy of the ring may get
DEFAULT_ACTIVATION_S = 10.0  # > REFRESH_S with a margin: every process accepts a new root before any signs with it
DEFAULT_GRACE_S = 24 * 3600.0
MIN_SEED_LEN = 32
# Keys whose presence means the store already holds Backup+ data (one EXISTS each: Cluster-safe)
DATA_KEYS = (keys.OUTAGES, keys.CONTRACTS, keys.TICKET_SEQ, keys.LEGACY_TICKET_SEQ)


class KeyRingError(RuntimeError):
    """The key ring cannot be used safely; the message says what to do."""


class KeyRingMissing(KeyRingError):
    """Redis holds Backup+ data but no key ring, and no root secret is configured."""


class KeyRingMismatch(KeyRingError):
    """The ring in Redis was not made from the root secret configured in this process."""


def seed_fingerprint(seed: bytes) -> str:
    """A short, non-secret name of a configured root secret (logs, mismatch messages)."""
    return hmac.new(seed, b"backupplus/keyring/seed-fingerprint", hashlib.sha256).hexdigest()[:16]


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
    seed_fp: str | None = None  # fingerprint of the configured root it was made from, if any

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
        data: dict[str, Any] = {"roots": [r.to_json() for r in self.roots]}
        if self.seed_fp is not None:
            data["seed_fp"] = self.seed_fp
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        data = json.loads(text)
        roots = tuple(RootKey.from_json(r) for r in data["roots"])
        if not roots:
            raise ValueError("the key ring in Redis has no root")
        seed_fp = data.get("seed_fp")
        return cls(roots, None if seed_fp is None else str(seed_fp))

    def made_from(self, seed: bytes) -> bool:
        """Whether this ring belongs to the configured root ``seed``."""
        if self.seed_fp is not None:
            return hmac.compare_digest(self.seed_fp, seed_fingerprint(seed))
        return any(hmac.compare_digest(r.root, seed) for r in self.roots)

    def shares_a_root_with(self, other: KeyRing) -> bool:
        return bool({r.id + ":" + r.root.decode() for r in self.roots}
                    & {r.id + ":" + r.root.decode() for r in other.roots})

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


async def holds_data(redis: aioredis.Redis) -> bool:
    """Whether the store already holds Backup+ data (outages, contracts, tickets)."""
    for key in DATA_KEYS:
        if await redis.exists(key):
            return True
    return False


def _mismatch(ring: KeyRing, seed: bytes) -> KeyRingMismatch:
    theirs = ring.seed_fp or "none (minted in Redis)"
    return KeyRingMismatch(
        f"the key ring in Redis was not made from the root secret configured here (fingerprint "
        f"{seed_fingerprint(seed)}; the ring's: {theirs}): every broker and media node of one deployment "
        "must be given the same BACKUPPLUS_SECRET (or BACKUPPLUS_SECRET_FILE); tokens signed by one would "
        "be refused by the others"
    )


async def load_keyring(redis: aioredis.Redis, seed: bytes | None = None) -> KeyRing:
    """The ring. When Redis has none, the first process to ask creates it (SET NX): from the
    configured root ``seed``; else from the single secret of earlier versions (``bp:secret``) so
    tokens minted before the upgrade stay valid; else from a new random root, but only into a
    store that holds no Backup+ data (``KeyRingMissing`` otherwise: minting would silently kill
    every link already sent). A ring not made from ``seed`` raises ``KeyRingMismatch``."""
    raw = await redis.get(keys.KEYRING)
    if raw is None:
        if seed is not None:
            ring, origin = KeyRing((RootKey("k1", seed),), seed_fingerprint(seed)), "the configured root secret"
        else:
            legacy = await redis.get(keys.SECRET)
            if legacy is None and await holds_data(redis):
                raise KeyRingMissing(
                    "Redis holds Backup+ data (outages, contracts or tickets) but no key ring, and no root "
                    "secret is configured: a new one would make every join link and token already sent "
                    "invalid. Give this process the deployment's root secret (BACKUPPLUS_SECRET or "
                    "BACKUPPLUS_SECRET_FILE), or restore the key ring (bp:keyring) from a backup"
                )
            root = _text(legacy) if legacy is not None else secrets.token_hex(32)
            ring = KeyRing((RootKey("k1", root.encode()),))
            origin = "the earlier single secret" if legacy is not None else "a new root (no Backup+ data in this store yet)"
        if await redis.set(keys.KEYRING, ring.to_json(), nx=True):
            log.warning("created the key ring in Redis from %s", origin)
        raw = await redis.get(keys.KEYRING)
        if raw is None:  # pragma: no cover - deleted between the two calls
            raise RuntimeError("the key ring vanished from Redis")
    ring = KeyRing.from_json(_text(raw))
    if seed is not None and not ring.made_from(seed):
        raise _mismatch(ring, seed)
    return ring


async def existing_root(redis: aioredis.Redis) -> bytes | None:
    """The root a state directory should keep for a store that already has a ring or an earlier
    single secret (``serve`` adopting its private Redis's data); None for a new store."""
    raw = await redis.get(keys.KEYRING)
    if raw is not None:
        ring = KeyRing.from_json(_text(raw))
        if ring.seed_fp is None:
            return ring.roots[-1].root  # the oldest root still kept
        matching = [r.root for r in ring.roots if seed_fingerprint(r.root) == ring.seed_fp]
        return matching[0] if matching else None
    legacy = await redis.get(keys.SECRET)
    return None if legacy is None else _text(legacy).encode()


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
                new = KeyRing((RootKey(f"k{number}", secrets.token_hex(32).encode(), start), *kept), ring.seed_fp)
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
    the media node's handlers). A ring that vanished from Redis is written back from this copy; a
    ring replaced by one this process cannot accept is reported in ``problem`` (``/readyz``)."""

    redis: aioredis.Redis
    ring: KeyRing
    refresh_s: float = REFRESH_S
    loaded_at: float = field(default_factory=time.monotonic)
    seed: bytes | None = None
    problem: str | None = None
    written_back: int = 0

    @classmethod
    async def load(cls, redis: aioredis.Redis, refresh_s: float = REFRESH_S, seed: bytes | None = None) -> KeyStore:
        return cls(redis, await load_keyring(redis, seed), refresh_s, seed=seed)

    async def reload(self) -> KeyRing:
        raw = await self.redis.get(keys.KEYRING)
        if raw is None:
            # lost (eviction, a failover, an operator): this copy is the survivor, not a new root
            if await self.redis.set(keys.KEYRING, self.ring.to_json(), nx=True):
                self.written_back += 1
                log.warning("the key ring was missing from Redis: wrote this process's copy back (%d root(s))",
                            len(self.ring.roots))
            raw = await self.redis.get(keys.KEYRING)
        if raw is not None:
            ring = KeyRing.from_json(_text(raw))
            if self.seed is not None and not ring.made_from(self.seed):
                self.problem = str(_mismatch(ring, self.seed))
            elif not ring.shares_a_root_with(self.ring):
                self.problem = ("the key ring in Redis was replaced by one sharing no root with this process's: "
                                "tokens signed before are refused; restart every broker and media node")
            else:
                self.problem = None
            if self.problem is None:
                self.ring = ring
            else:
                log.error("key ring: %s", self.problem)
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
