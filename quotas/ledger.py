"""The atomic port ledger: capacity, priorities, reserves, ceilings and leases of each outage, in Redis.

Every state change is one Lua script (``quotas/lua``) over the outage's keys (one hash tag), so the
caps hold across any number of broker processes, and the script that decides also appends the
decision to the outage's audit trail. Times come from Redis ``TIME`` inside the scripts: every
broker and media node shares that one clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from infra.redisconn import is_cluster, publish
from infra.text import as_str

from . import keys
from .errors import LedgerError
from .scripts import ScriptRunner

Kind = Literal["audio", "video"]
KINDS: tuple[Kind, Kind] = ("audio", "video")
AdmitStatus = Literal["granted", "full", "ended", "no_conference", "rate_limited", "idempotency_mismatch"]
ConferenceStatus = Literal["ok", "ended", "no_conference", "reserve_exceeds_capacity", "max_below_reserve"]
ADMIT_RECLAIM_LIMIT = 100
SWEEP_BATCH = 200
_STATE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_/")


@dataclass(frozen=True)
class RateLimit:
    """A conference's admission token bucket: ``burst`` at once, then ``per_s`` a second."""

    burst: int = 12
    per_s: float = 1.0


@dataclass(frozen=True)
class AdmitResult:
    status: AdmitStatus
    participant_id: str  # the admitted one (for a replayed Idempotency-Key: the first request's)
    kind: str | None  # granted kind (may be "audio" for a downgraded video request); refused: the requested one
    lease_expires_ms: int  # 0 unless granted
    capacity: int  # refused: of the refused kind (or the conference's ceiling); granted: of the granted kind
    in_use: int
    downgraded: bool
    preempted: str | None = None  # the participant whose port this admission took
    preempted_conference: str | None = None
    retry_after_ms: int = 0  # rate_limited: when the next admission of this conference may pass
    reason: str = ""  # full: "full" or "conference_max"


@dataclass(frozen=True)
class RenewResult:
    status: Literal["renewed", "readmitted", "gone"]
    expires_ms: int
    reason: str  # gone: the final state or why ("left", "preempted", "lease_expired", "no_capacity" ...)


@dataclass(frozen=True)
class ConferenceChange:
    status: ConferenceStatus
    priority: int | None = None
    reserve: dict[str, int] | None = None
    ceiling: dict[str, int | None] | None = None
    kind: str | None = None  # max_below_reserve: which kind


@dataclass(frozen=True)
class LedgerParticipant:
    """A participant as the ledger knows it: its record (opaque doc) and the fields the ledger owns."""

    id: str
    doc: dict[str, Any]
    state: str  # admitted | connected | left | preempted | ended
    state_reason: str | None
    kind: str | None
    conference: str | None
    lease_expires_ms: int | None  # None when it holds no live lease


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be audio or video, not {kind!r}")


def _check_state(state: str) -> None:
    if not state or len(state) > 48 or not set(state) <= _STATE_CHARS:
        raise ValueError(f"invalid participant state {state!r}")


def _opt(value: int | None) -> str:
    return "" if value is None else str(int(value))


def split_state(raw: str | None) -> tuple[str, str | None]:
    """``"left/lease_expired"`` -> ("left", "lease_expired")."""
    state, _, reason = (raw or "admitted").partition("/")
    return state, reason or None


class PortLedger:
    """Async API over the ledger scripts. The client may use decode_responses True or False."""

    def __init__(self, redis: aioredis.Redis, scripts: ScriptRunner | None = None) -> None:
        self.redis = redis
        self._scripts = scripts or ScriptRunner(redis)
        # A script publishes its media-node event itself (PUBLISH, atomic with the decision); on a
        # Redis Cluster a script may only SPUBLISH on a channel of its own slot, so there the script
        # publishes nothing and the call publishes right after it (SPUBLISH on keys.EVENTS).
        self._cluster = is_cluster(redis)
        self._channel = "" if self._cluster else keys.EVENTS

    async def load_scripts(self) -> None:
        """Registers the scripts now (SCRIPT LOAD) instead of on the first call: optional warm-up."""
        await self._scripts.load()

    async def _call(self, name: str, outage_id: str, *args: str | int, extra_keys: tuple[str, ...] = ()) -> Any:
        return await self._scripts.call(name, keys.ledger_keys(outage_id) + extra_keys, args)

    # --- outages --------------------------------------------------------------------------------
    async def open_outage(
        self, outage_id: str, doc: dict[str, Any], audio: int, video: int, *, contract: str = "",
        serial: str = "", ticket: str = "",
    ) -> bool:
        """Creates the outage (state active) with its capacity; False if it already exists."""
        if audio < 0 or video < 0:
            raise ValueError("capacity must be >= 0")
        res = await self._call("open_outage", outage_id, _dumps(doc), audio, video, contract, serial, ticket)
        return int(res) == 1

    async def outage_fields(self, outage_id: str) -> dict[str, str]:
        """The outage hash (doc, state, window_ends_at, acknowledged_at ...); {} when unknown."""
        raw = await self.redis.hgetall(keys.outage_doc(outage_id))  # type: ignore[misc]
        return {as_str(k): as_str(v) for k, v in raw.items()}

    async def acknowledge(self, outage_id: str, by: str, ack_deadline_ms: int) -> tuple[str, int, str]:
        """(status 'acknowledged'|'already'|'not_found', acknowledged_at ms, counted 'met'|'missed'|'')."""
        res = await self._call("acknowledge", outage_id, by, int(ack_deadline_ms))
        return as_str(res[0]), int(res[1]), as_str(res[2])

    async def sla_overdue(self, outage_id: str, ack_deadline_ms: int, restore_deadline_ms: int) -> tuple[str, str]:
        """Counts each deadline found passed (once per outage): ('missed' or '', 'missed' or '')."""
        res = await self._call("sla_overdue", outage_id, int(ack_deadline_ms), int(restore_deadline_ms))
        return as_str(res[0]), as_str(res[1])

    async def set_planned_end(self, outage_id: str, window_ends_at: str | None, by: str = "") -> bool:
        """Sets (or clears, with None) the planned end of an active outage; False when it is not active."""
        return as_str(await self._call("set_planned_end", outage_id, window_ends_at or "", by)) == "ok"

    async def close_outage(
        self, outage_id: str, reason: Literal["restored", "planned_end"], restore_deadline_ms: int, *,
        by: str = "", audit_ttl_ms: int = 30 * 86_400_000,
    ) -> tuple[list[str], str] | None:
        """Ends an active outage: every lease released, all but its summary deleted.

        Returns (the released participant ids, the restore deadline's result if this call counted it),
        or None if the outage was not active.
        """
        if reason not in ("restored", "planned_end"):
            raise ValueError(f"invalid end reason {reason!r}")
        res = await self._call("close_outage", outage_id, reason, int(restore_deadline_ms), by, int(audit_ttl_ms))
        if as_str(res[0]) != "ok":
            return None
        return [as_str(p) for p in res[2:]], as_str(res[1])

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

    async def conference_use(self, outage_id: str) -> dict[str, dict[str, int]]:
        """Ports each conference holds: {conference: {"audio": n, "video": n}}."""
        raw = await self.redis.hgetall(keys.conference_use(outage_id))  # type: ignore[misc]
        out: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            conf, _, kind = as_str(field).rpartition(":")
            out.setdefault(conf, {"audio": 0, "video": 0})[kind] = int(value)
        return out

    async def repair(self, outage_id: str) -> tuple[int, list[str]]:
        """The audit: recomputes the outage's ledger and repairs it. (repairs made, expired leases reclaimed)."""
        res = await self._call("repair", outage_id)
        return int(res[0]), [as_str(p) for p in res[1:]]

    async def audit_events(self, outage_id: str, after: str = "-", limit: int = 100) -> list[dict[str, str]]:
        """The outage's audit trail, oldest first, after the event id ``after`` (exclusive)."""
        start = "-" if after in ("", "-") else f"({after}"
        entries = await self.redis.xrange(keys.audit(outage_id), min=start, max="+", count=limit) or []
        return [{"id": as_str(i), **{as_str(k): as_str(v) for k, v in (fields or {}).items()}} for i, fields in entries]

    # --- conferences ----------------------------------------------------------------------------
    async def add_conference(
        self, outage_id: str, conference_id: str, doc: dict[str, Any], *, priority: int = 5,
        reserve: dict[str, int] | None = None, ceiling: dict[str, int | None] | None = None,
    ) -> Literal["ok", "ended", "reserve_exceeds_capacity"]:
        """Adds (or replaces) a conference with its priority, reserves and ceilings, while the outage is active."""
        reserve = reserve or {"audio": 0, "video": 0}
        ceiling = ceiling or {"audio": None, "video": None}
        if min(reserve.values()) < 0:
            raise ValueError("reserves must be >= 0")
        res = as_str(await self._call(
            "add_conference", outage_id, conference_id, _dumps(doc), int(priority), reserve["audio"],
            reserve["video"], _opt(ceiling.get("audio")), _opt(ceiling.get("video")),
        ))
        if res not in ("ok", "ended", "reserve_exceeds_capacity"):
            raise LedgerError(f"add_conference answered {res!r}")
        return cast(Literal["ok", "ended", "reserve_exceeds_capacity"], res)

    async def update_conference(
        self, outage_id: str, conference_id: str, *, doc: dict[str, Any] | None = None,
        priority: int | None = None, reserve: dict[str, int] | None = None,
        ceiling: dict[str, int | None] | None = None,
    ) -> ConferenceChange:
        """Changes what is given, atomically with the ledger; never evicts anyone.

        ``reserve``/``ceiling`` may give one kind or both; a ceiling of None removes it.
        """
        reserve = reserve or {}
        ceiling = ceiling if ceiling is not None else {}

        def ceil(kind: str) -> str:
            if kind not in ceiling:
                return ""
            value = ceiling[kind]
            return "none" if value is None else str(int(value))

        res = await self._call(
            "update_conference", outage_id, conference_id, "" if doc is None else _dumps(doc), _opt(priority),
            _opt(reserve.get("audio")), _opt(reserve.get("video")), ceil("audio"), ceil("video"),
        )
        status = as_str(res[0])
        if status == "max_below_reserve":
            return ConferenceChange("max_below_reserve", kind=as_str(res[1]))
        if status != "ok":
            return ConferenceChange(cast(ConferenceStatus, status))
        ceilings: dict[str, int | None] = {
            k: None if as_str(v) == "none" else int(as_str(v)) for k, v in zip(KINDS, res[4:6], strict=True)
        }
        return ConferenceChange(
            "ok", int(as_str(res[1])), {"audio": int(res[2]), "video": int(res[3])}, ceilings,
        )

    async def conference_settings(self, outage_id: str, conference_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Priority, reserve and ceiling of each conference (read in one round trip)."""
        fields = [f"{c}:{k}" for c in conference_ids for k in KINDS]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.priorities(outage_id), conference_ids)
            pipe.hmget(keys.reserves(outage_id), fields)
            pipe.hmget(keys.ceilings(outage_id), fields)
            prios, resv, ceil = await pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        for i, c in enumerate(conference_ids):
            out[c] = {
                "priority": int(prios[i]) if prios[i] is not None else 5,
                "reserve": {k: int(resv[2 * i + j] or 0) for j, k in enumerate(KINDS)},
                "max": {k: (int(ceil[2 * i + j]) if ceil[2 * i + j] is not None else None) for j, k in enumerate(KINDS)},
            }
        return out

    async def remove_conference(self, outage_id: str, conference_id: str, by: str = "") -> list[str]:
        """Releases the conference's leases (participants "ended"), deletes it, its reserves and ceilings."""
        return [as_str(p) for p in await self._call("remove_conference", outage_id, conference_id, by)]

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
        *,
        display_name: str = "",
        rate: RateLimit | None = None,
        idempotency: tuple[str, str] | None = None,
        idempotency_ttl_ms: int = 86_400_000,
    ) -> AdmitResult:
        """One atomic admission (see quotas/lua/admit.lua for the rule).

        ``idempotency`` = (Idempotency-Key, fingerprint of the request): a retry with the same key gets
        the participant the first request admitted while its lease lives.
        """
        _check_kind(kind)
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be > 0")
        rate = rate or RateLimit()
        if rate.burst < 1 or rate.per_s <= 0:
            raise ValueError("the rate limit needs a burst >= 1 and a positive rate")
        key, fingerprint = idempotency or ("-", "")
        res = await self._call(
            "admit", outage_id, participant_id, conference_id, kind, 1 if downgrade else 0, int(ttl_ms),
            _dumps(participant_doc), display_name, rate.burst, repr(float(rate.per_s)), fingerprint,
            int(idempotency_ttl_ms), ADMIT_RECLAIM_LIMIT, self._channel,
            extra_keys=(keys.admission_key(outage_id, key),),
        )
        status = as_str(res[0])
        if status not in ("granted", "full", "ended", "no_conference", "rate_limited", "idempotency_mismatch"):
            raise LedgerError(f"admit answered {res!r}")
        if self._cluster and as_str(res[6]):
            await publish(self.redis, keys.EVENTS, _dumps({
                "type": "participant_preempted", "outage": outage_id, "participant": as_str(res[6]),
                "conference": as_str(res[7])}))
        return AdmitResult(
            status=cast(AdmitStatus, status),
            participant_id=as_str(res[9]),
            kind=as_str(res[1]) or None,
            lease_expires_ms=int(res[2]),
            capacity=int(res[3]),
            in_use=int(res[4]),
            downgraded=bool(int(res[5])),
            preempted=as_str(res[6]) or None,
            preempted_conference=as_str(res[7]) or None,
            retry_after_ms=int(res[8]),
            reason=as_str(res[10]),
        )

    async def renew(
        self, outage_id: str, participant_id: str, ttl_ms: int, *, state: str | None = None,
        conference: str = "", kind: str = "", readmit: bool = False,
    ) -> RenewResult:
        """Extends a live lease to now + ttl_ms (and sets the state if given). With ``readmit``, a lease
        the ledger lost (no decision ended it) is admitted again when a port is free."""
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be > 0")
        if state is not None:
            _check_state(state)
        res = await self._call(
            "renew", outage_id, participant_id, int(ttl_ms), state or "", conference, kind, 1 if readmit else 0
        )
        return RenewResult(cast(Any, as_str(res[0])), int(res[1]), as_str(res[2]))

    async def release(self, outage_id: str, participant_id: str, final_state: str = "left") -> bool:
        """Frees the participant's port at once. Idempotent: True only for the call that freed it."""
        _check_state(final_state)
        return int(await self._call("release", outage_id, participant_id, final_state)) == 1

    async def leave(
        self, outage_id: str, participant_id: str, event: dict[str, Any], final_state: str = "left"
    ) -> tuple[Literal["not_found", "released", "already"], str]:
        """Release, publishing ``event`` on keys.EVENTS when this call freed the port. (status, conference)."""
        _check_state(final_state)
        res = await self._call("leave", outage_id, participant_id, final_state, self._channel, _dumps(event))
        status = as_str(res[0])
        if status not in ("not_found", "released", "already"):
            raise LedgerError(f"leave answered {res!r}")
        if self._cluster and status == "released":
            await publish(self.redis, keys.EVENTS, _dumps(event))
        return cast(Literal["not_found", "released", "already"], status), as_str(res[1])

    async def reclaim_expired(self, outage_id: str, limit: int = SWEEP_BATCH) -> list[str]:
        """Reclaims up to ``limit`` expired leases (participants "left/lease_expired"); their ids."""
        return [as_str(p) for p in await self._call("reclaim", outage_id, int(limit))]

    async def active_outages(self) -> list[str]:
        return sorted(as_str(m) for m in await self.redis.smembers(keys.ACTIVE_OUTAGES))  # type: ignore[misc]

    async def sweep(self) -> dict[str, list[str]]:
        """reclaim_expired over every active outage; only the outages where something was reclaimed.

        Safe from many processes at once: each reclaim is one atomic script, a lease is reclaimed once.
        """
        out: dict[str, list[str]] = {}
        for outage_id in await self.active_outages():
            while True:
                pids = await self.reclaim_expired(outage_id, SWEEP_BATCH)
                if pids:
                    out.setdefault(outage_id, []).extend(pids)
                if len(pids) < SWEEP_BATCH:
                    break
        return out

    # --- participants ---------------------------------------------------------------------------
    async def participant(self, outage_id: str, participant_id: str) -> LedgerParticipant | None:
        """One participant, read in one round trip; None when the ledger has no record of it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.participants(outage_id), participant_id)
            pipe.hget(keys.participant_states(outage_id), participant_id)
            pipe.hget(keys.participant_kinds(outage_id), participant_id)
            pipe.hget(keys.participant_conferences(outage_id), participant_id)
            pipe.zscore(keys.leases(outage_id), participant_id)
            doc, state, kind, conf, expiry = await pipe.execute()
        if doc is None and state is None and conf is None:
            return None
        return self._participant(participant_id, doc, state, kind, conf, expiry)

    @staticmethod
    def _participant(pid: str, doc: Any, state: Any, kind: Any, conf: Any, expiry: Any) -> LedgerParticipant:
        st, reason = split_state(as_str(state))
        return LedgerParticipant(
            id=pid, doc=json.loads(as_str(doc)) if doc is not None else {}, state=st, state_reason=reason,
            kind=as_str(kind), conference=as_str(conf),
            lease_expires_ms=int(float(expiry)) if expiry is not None else None,
        )

    async def live_participants(self, outage_id: str, conference_id: str | None = None) -> list[LedgerParticipant]:
        """The participants holding a live lease (of one conference when given), oldest admission first."""
        pids = [as_str(p) for p in await self.redis.zrange(keys.lease_order(outage_id), 0, -1)]
        if not pids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.participants(outage_id), pids)
            pipe.hmget(keys.participant_states(outage_id), pids)
            pipe.hmget(keys.participant_kinds(outage_id), pids)
            pipe.hmget(keys.participant_conferences(outage_id), pids)
            pipe.zmscore(keys.leases(outage_id), pids)
            docs, states, kinds, confs, expiries = await pipe.execute()
        out = []
        for i, pid in enumerate(pids):
            if expiries[i] is None or (conference_id is not None and as_str(confs[i]) != conference_id):
                continue
            out.append(self._participant(pid, docs[i], states[i], kinds[i], confs[i], expiries[i]))
        return out
