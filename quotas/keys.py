"""Redis key names, in one place.

Every key that belongs to one outage carries the hash tag ``{o-<id>}`` so that all of them hash to
the same Cluster slot and one Lua script can touch them together (``ledger_keys`` lists them in the
order every ledger script receives them as KEYS). Keys that span outages are global and are only
ever touched one at a time (never from a multi-key script).

The ledger owns the fields it decides on as hash fields (a participant's kind, state, conference
and lease; a conference's priority, reserve and ceiling); the documents written by Python
(``doc`` fields) stay opaque to Lua.
"""

from __future__ import annotations

from functools import lru_cache

PREFIX = "bp"


def _tag(outage_id: str) -> str:
    return f"{PREFIX}:{{{outage_id}}}"


# --- per outage (one hash tag) --------------------------------------------------------------------
def outage_doc(outage_id: str) -> str:
    """Hash: ``doc`` (declaration JSON, opaque), ``state`` (active|restored), ``cap_audio``/``cap_video``,
    ``window_ends_at`` (planned end, RFC 3339 or ''), ``acknowledged_at``/``acknowledged_by``,
    ``ended_at``/``end_reason``, ``seq`` (admission order), ``ack_counted``/``restore_counted``
    (the SLA result counted once), ``admitted``/``preempted``/``refused`` (totals for the summary)."""
    return f"{_tag(outage_id)}:outage"


def capacity(outage_id: str) -> str:
    """Hash kind -> capacity (audio, video). Present only while the outage is active."""
    return f"{_tag(outage_id)}:cap"


def in_use(outage_id: str) -> str:
    """Hash kind -> ports in use: a cache of the live leases, rewritten by every script that decides."""
    return f"{_tag(outage_id)}:use"


def conference_use(outage_id: str) -> str:
    """Hash ``<conference>:<kind>`` -> ports in use by that conference (cache, as ``in_use``)."""
    return f"{_tag(outage_id)}:cuse"


def conferences(outage_id: str) -> str:
    """Hash conference id -> conference JSON (title, created_at ...; opaque to Lua)."""
    return f"{_tag(outage_id)}:confs"


def priorities(outage_id: str) -> str:
    """Hash conference id -> priority (1 = most important)."""
    return f"{_tag(outage_id)}:cprio"


def reserves(outage_id: str) -> str:
    """Hash ``<conference>:<kind>`` -> ports promised to that conference."""
    return f"{_tag(outage_id)}:resv"


def ceilings(outage_id: str) -> str:
    """Hash ``<conference>:<kind>`` -> most ports that conference may hold (absent: no ceiling)."""
    return f"{_tag(outage_id)}:cmax"


def leases(outage_id: str) -> str:
    """Sorted set participant -> lease expiry (ms since epoch, Redis TIME). Live leases only."""
    return f"{_tag(outage_id)}:leases"


def lease_meta(outage_id: str) -> str:
    """Hash participant -> ``<conference>|<kind>``: what each live lease holds."""
    return f"{_tag(outage_id)}:lmeta"


def lease_order(outage_id: str) -> str:
    """Sorted set participant -> admission sequence, live leases only (preemption takes the latest)."""
    return f"{_tag(outage_id)}:lorder"


def participants(outage_id: str) -> str:
    """Hash participant id -> participant JSON written at admission (display name ...; opaque to Lua)."""
    return f"{_tag(outage_id)}:parts"


def participant_states(outage_id: str) -> str:
    """Hash participant -> ``state`` or ``state/reason`` (admitted, connected, left, preempted, ended)."""
    return f"{_tag(outage_id)}:pstate"


def participant_kinds(outage_id: str) -> str:
    """Hash participant -> the kind of port granted."""
    return f"{_tag(outage_id)}:pkind"


def participant_conferences(outage_id: str) -> str:
    """Hash participant -> conference."""
    return f"{_tag(outage_id)}:pconf"


def history(outage_id: str) -> str:
    """Sorted set participant -> when it ended (ms): the bounded recent history of ended participants."""
    return f"{_tag(outage_id)}:hist"


def rate(outage_id: str) -> str:
    """Hash conference -> ``<tokens>|<ms>``: each conference's admission token bucket."""
    return f"{_tag(outage_id)}:rate"


def audit(outage_id: str) -> str:
    """Stream: every decision on the outage (the audit trail), appended by the script that decides."""
    return f"{_tag(outage_id)}:events"


def admission_key(outage_id: str, idempotency_key: str) -> str:
    """String ``<participant>|<fingerprint>``: the admission an Idempotency-Key produced (24 h)."""
    return f"{_tag(outage_id)}:aidem:{idempotency_key}"


def media_node_of(outage_id: str) -> str:
    """String: the media node the outage's conferences are placed on."""
    return f"{_tag(outage_id)}:node"


@lru_cache(maxsize=4096)
def ledger_keys(outage_id: str) -> tuple[str, ...]:
    """The KEYS of every ledger script, always in this order (quotas/lua/_lib.lua names them)."""
    return (
        outage_doc(outage_id),
        capacity(outage_id),
        in_use(outage_id),
        conference_use(outage_id),
        conferences(outage_id),
        priorities(outage_id),
        reserves(outage_id),
        ceilings(outage_id),
        leases(outage_id),
        lease_meta(outage_id),
        lease_order(outage_id),
        participants(outage_id),
        participant_states(outage_id),
        participant_kinds(outage_id),
        participant_conferences(outage_id),
        history(outage_id),
        rate(outage_id),
        audit(outage_id),
    )


# --- global --------------------------------------------------------------------------------------
# Sorted set outage id -> declared-at (ms): every outage ever declared, for listing.
OUTAGES = f"{PREFIX}:outages"
# Set of active outage ids: what the lease sweeper, the audit and the lifecycle task walk.
ACTIVE_OUTAGES = f"{PREFIX}:outages:active"
# Hash state -> how many outages ended in that state; active ones are ACTIVE_OUTAGES.
OUTAGE_END_COUNTS = f"{PREFIX}:outages:ended"
# Hash ``<deadline>:<result>`` (ack|restore : met|missed) -> how many outages, counted once each.
SLA_DEADLINES = f"{PREFIX}:sla:deadlines"
# Hash ``total`` -> how many entries the ledger's audit has repaired, all brokers together.
LEDGER_REPAIRS = f"{PREFIX}:ledger:repairs"
# --- tickets (one hash tag: ticket_open.lua numbers and records a request in one step) ------------
# Counter behind ticket numbers: INCR'd by the script that writes the ticket, so numbers have no gap.
TICKET_SEQ = f"{PREFIX}:{{tickets}}:seq"
# The counter of the earlier version (before the hash tag); read once to carry the numbering on.
LEGACY_TICKET_SEQ = f"{PREFIX}:ticket:seq"
# Hash ticket number -> the request JSON (who called, about what, when it was received).
TICKET_REQUESTS = f"{PREFIX}:{{tickets}}:requests"
# Hash ticket number -> the outcome JSON (an outage, or refused with its code).
TICKET_OUTCOMES = f"{PREFIX}:{{tickets}}:outcomes"
# Sorted set ticket number -> received at (ms): every ticket.
TICKETS = f"{PREFIX}:{{tickets}}:all"
# The single shared secret of earlier versions; the key ring starts from it (quotas.secret).
SECRET = f"{PREFIX}:secret"
# String: the key ring JSON (root secrets, when each signs and until when it is accepted; quotas.secret).
KEYRING = f"{PREFIX}:keyring"


def internal_nonce(nonce: str) -> str:
    """String: a nonce of a signed internal call, seen once (SET NX PX: a replay finds it)."""
    return f"{PREFIX}:inonce:{nonce}"
# Pub/sub channel for events media nodes act on (participant left or preempted, outage ended ...).
EVENTS = f"{PREFIX}:events"
# Sorted set media node id -> last heartbeat (ms).
MEDIA_NODES = f"{PREFIX}:nodes"
# Set of contract numbers.
CONTRACTS = f"{PREFIX}:contracts"


def contract(number: str) -> str:
    """String: contract JSON. Numbers never contain ':' (broker.contracts), so no other key collides."""
    return f"{PREFIX}:contract:{number}"


def server_outage(contract_number: str, serial: str) -> str:
    """String: id of the server's active outage (SET NX: one active outage per contract + serial)."""
    return f"{PREFIX}:server-outage:{contract_number}:{serial}"


def contract_tickets(contract_number: str) -> str:
    """Sorted set ticket number -> received at (ms): the contract's tickets (same hash tag as TICKETS)."""
    return f"{PREFIX}:{{tickets}}:contract:{contract_number}"


def ticket_keys(contract_number: str) -> tuple[str, ...]:
    """The KEYS of ticket_open.lua and ticket_outcome.lua, in this order."""
    return (TICKET_SEQ, TICKET_REQUESTS, TICKET_OUTCOMES, TICKETS, contract_tickets(contract_number))


def idempotency(key: str) -> str:
    """String: ``<outage or ticket>|<fingerprint>`` a declare with this Idempotency-Key produced (24 h)."""
    return f"{PREFIX}:idem:{key}"


def media_node(node_id: str) -> str:
    """Hash: a media node's address, capacity, load, state."""
    return f"{PREFIX}:node:{node_id}"
