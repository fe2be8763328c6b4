"""The atomic port ledger: capacity, reserves and leases of each outage, kept in Redis.

Every state change is one Lua script (``quotas/lua``) over the outage's keys (one hash tag), so the
caps hold across any number of broker processes. Times are passed in (``now_ms``) so tests control
the clock; by default the local wall clock is used.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from infra.text import as_str

from . import keys
from .errors import LedgerError
from .scripts import ScriptRunner

Kind = Literal["audio", "video"]
AdmitStatus = Literal["granted", "full", "ended", "no_conference"]
KINDS: tuple[Kind, Kind] = ("audio", "video")

# Keys the ledger owns in a participant doc; admit puts them last, in this order.
_PART_RESERVED = ("kind", "requested_kind", "lease_expires_at_ms", "state")
_STATE_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_CAS_ATTEMPTS = 50
ADMIT_RECLAIM_LIMIT = 100


@dataclass(frozen=True)
class AdmitResult:
    status: AdmitStatus
    kind: str | None  # granted kind (may be "audio" for a downgraded video request); for "full": the requested kind
    lease_expires_ms: int  # 0 unless granted
    capacity: int  # for "full": capacity of the refused kind; else of the granted kind
    in_use: int  # for "full": in use of the refused kind; after a grant: in use of the granted kind
    downgraded: bool


def now_ms() -> int:
    return int(time.time() * 1000)


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be audio or video, not {kind!r}")


def _check_state(state: str) -> None:
    if not _STATE_RE.match(state):
        raise ValueError(f"invalid participant state {state!r}")


class PortLedger:
    """Async API over the ledger scripts. The client may use decode_responses True or False."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._scripts = ScriptRunner(redis)

    async def load_scripts(self) -> None:
        """Registers the scripts now (SCRIPT LOAD) instead of on the first call: optional warm-up."""
        await self._scripts.load()

    async def _call(self, name: str, outage_id: str, *args: str | int) -> Any:
        return await self._scripts.call(name, keys.ledger_keys(outage_id), args)

    # --- outages --------------------------------------------------------------------------------
    async def open_outage(self, outage_id: str, outage_doc: dict[str, Any], audio: int, video: int) -> bool:
        """Creates the outage (state active) with its capacity; False if it already exists."""
        if audio < 0 or video < 0:
            raise ValueError("capacity must be >= 0")
        return int(await self._call("open_outage", outage_id, _dumps(outage_doc), audio, video)) == 1

    async def _doc_cas(
        self, outage_id: str, name: str, build: Callable[[dict[str, Any]], dict[str, Any]], *extra: str
    ) -> tuple[Any, dict[str, Any]] | None:
        """Reads the doc, builds the new one in Python and writes it with a compare-and-set script."""
        okey = keys.outage_doc(outage_id)
        for _ in range(_CAS_ATTEMPTS):
            raw_doc, raw_state = await self.redis.hmget(okey, ["doc", "state"])  # type: ignore[misc]
            if raw_state is None or as_str(raw_state) != "active":
                return None
            old = as_str(raw_doc) if raw_doc is not None else ""
            new_doc: dict[str, Any] = build(json.loads(old) if old else {})
            res = await self._call(name, outage_id, *extra, old, _dumps(new_doc))
            status = as_str(res[0] if isinstance(res, list) else res)
            if status == "inactive":
                return None
            if status != "retry":
                return res, new_doc
        raise LedgerError(f"outage {outage_id}: doc kept changing, gave up after {_CAS_ATTEMPTS} tries")

    async def update_doc(self, outage_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Merges ``changes`` into the outage doc while it is active; the new doc, or None."""

        def build(doc: dict[str, Any]) -> dict[str, Any]:
            return {**doc, **changes}

        done = await self._doc_cas(outage_id, "update_doc", build)
        return None if done is None else done[1]

    async def close_outage(
        self, outage_id: str, state: Literal["restored", "expired"], now_iso: str
    ) -> list[str] | None:
        """Ends an active outage: every lease released (participants "left"), ledger keys deleted.

        Returns the released participant ids, or None if the outage was not active.
        """
        if state not in ("restored", "expired"):
            raise ValueError(f"invalid final outage state {state!r}")

        def build(doc: dict[str, Any]) -> dict[str, Any]:
            return {**doc, "state": state, "ended_at": now_iso}

        done = await self._doc_cas(outage_id, "close_outage", build, state)
        if done is None:
            return None
        return [as_str(p) for p in done[0][1:]]

    async def usage(self, outage_id: str) -> dict[str, dict[str, int]]:
        """{"capacity": {"audio", "video"}, "in_use": {"audio", "video"}}; zeros when not active."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.capacity(outage_id), list(KINDS))
            pipe.hmget(keys.in_use(outage_id), list(KINDS))
            cap, use = await pipe.execute()
        return {
            "capacity": {k: int(v or 0) for k, v in zip(KINDS, cap, strict=True)},
            "in_use": {k: int(v or 0) for k, v in zip(KINDS, use, strict=True)},
        }

    # --- conferences ----------------------------------------------------------------------------
    async def add_conference(
        self, outage_id: str, conference_id: str, doc: dict[str, Any], reserve_audio: int, reserve_video: int
    ) -> Literal["ok", "ended", "reserve_exceeds_capacity"]:
        """Adds (or replaces) a conference with its reserves, while the outage is active."""
        if reserve_audio < 0 or reserve_video < 0:
            raise ValueError("reserves must be >= 0")
        res = as_str(
            await self._call("add_conference", outage_id, conference_id, _dumps(doc), reserve_audio, reserve_video)
        )
        if res not in ("ok", "ended", "reserve_exceeds_capacity"):
            raise LedgerError(f"add_conference answered {res!r}")
        return cast(Literal["ok", "ended", "reserve_exceeds_capacity"], res)

    async def remove_conference(self, outage_id: str, conference_id: str) -> list[str]:
        """Releases the conference's leases (participants "left"), deletes it and its reserves."""
        return [as_str(p) for p in await self._call("remove_conference", outage_id, conference_id)]

    # --- leases ---------------------------------------------------------------------------------
    async def admit(
        self,
        outage_id: str,
        conference_id: str,
        participant_id: str,
        kind: Kind,
        downgrade: bool,
        ttl_ms: int,
        participant_doc: dict[str, Any],
        now_ms: int | None = None,
        overshoot: int = 0,
    ) -> AdmitResult:
        """One atomic admission (see quotas/lua/admit.lua for the rule).

        ``overshoot`` is TEST-ONLY and UNSAFE: it raises the effective cap by that many ports so a
        load test can show that the cap watcher catches a broken cap. Never set it in production.
        """
        _check_kind(kind)
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be > 0")
        body = {k: v for k, v in participant_doc.items() if k not in _PART_RESERVED}
        res = await self._call(
            "admit",
            outage_id,
            participant_id,
            conference_id,
            kind,
            1 if downgrade else 0,
            int(ttl_ms),
            _dumps(body),
            _now(now_ms),
            int(overshoot),
            ADMIT_RECLAIM_LIMIT,
        )
        status = as_str(res[0])
        if status not in ("granted", "full", "ended", "no_conference"):
            raise LedgerError(f"admit answered {res!r}")
        granted_kind = as_str(res[1]) or None
        return AdmitResult(
            status=cast(AdmitStatus, status),
            kind=granted_kind,
            lease_expires_ms=int(res[2]),
            capacity=int(res[3]),
            in_use=int(res[4]),
            downgraded=bool(int(res[5])),
        )

    async def renew(
        self, outage_id: str, participant_id: str, ttl_ms: int, now_ms: int | None = None, state: str | None = None
    ) -> int | None:
        """Extends a live lease to now + ttl_ms (and sets the participant state if given).

        Returns the new expiry, or None when the lease is gone (released, reclaimed, expired, or
        outage ended): the caller must then drop the participant's media.
        """
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be > 0")
        if state is not None:
            _check_state(state)
        res = await self._call("renew", outage_id, participant_id, int(ttl_ms), _now(now_ms), state or "")
        return None if res is None else int(res)

    async def release(self, outage_id: str, participant_id: str, final_state: str = "left") -> bool:
        """Frees the participant's port at once. Idempotent: True only for the call that freed it."""
        _check_state(final_state)
        return int(await self._call("release", outage_id, participant_id, final_state)) == 1

    async def leave(
        self, outage_id: str, participant_id: str, expected_conference: str | None, event: dict[str, Any],
        final_state: str = "left",
    ) -> tuple[Literal["not_found", "forbidden", "released", "already"], str]:
        """Release on behalf of a caller allowed only ``expected_conference`` (None: any), publishing
        ``event`` on keys.EVENTS when this call freed the port. One script call. (status, conference)."""
        _check_state(final_state)
        res = await self._call(
            "leave", outage_id, participant_id, expected_conference or "", final_state, keys.EVENTS, _dumps(event)
        )
        status = as_str(res[0])
        if status not in ("not_found", "forbidden", "released", "already"):
            raise LedgerError(f"leave answered {res!r}")
        return cast(Literal["not_found", "forbidden", "released", "already"], status), as_str(res[1])

    async def reclaim_expired(self, outage_id: str, now_ms: int | None = None, limit: int = 200) -> list[str]:
        """Reclaims up to ``limit`` expired leases (participants "expired"); their ids."""
        return [as_str(p) for p in await self._call("reclaim", outage_id, _now(now_ms), int(limit))]

    async def sweep(self, now_ms: int | None = None) -> dict[str, list[str]]:
        """reclaim_expired over every outage in ``keys.ACTIVE_OUTAGES``.

        Returns only the outages where something was reclaimed. Safe to run from many processes at
        once: each reclaim is one atomic script, a lease is reclaimed exactly once.
        """
        at = _now(now_ms)
        out: dict[str, list[str]] = {}
        members = await self.redis.smembers(keys.ACTIVE_OUTAGES)  # type: ignore[misc]
        for raw in sorted(as_str(m) for m in members):
            batch_limit = 200
            while True:
                pids = await self.reclaim_expired(raw, at, batch_limit)
                if pids:
                    out.setdefault(raw, []).extend(pids)
                if len(pids) < batch_limit:
                    break
        return out


def _now(value: int | None) -> int:
    return now_ms() if value is None else int(value)
