"""Redis key names, in one place.

Every key that belongs to one outage carries the hash tag ``{o-<id>}`` so that all of them hash to
the same Cluster slot and one Lua script can touch them together. Keys that span outages are
global and are only ever touched one at a time (never from a multi-key script).
"""

from __future__ import annotations

PREFIX = "bp"


def _tag(outage_id: str) -> str:
    return f"{PREFIX}:{{{outage_id}}}"


# --- per outage (one hash tag) --------------------------------------------------------------------
def outage_doc(outage_id: str) -> str:
    """Hash: ``doc`` = outage JSON, ``state`` = active|restored|expired."""
    return f"{_tag(outage_id)}:outage"


def capacity(outage_id: str) -> str:
    """Hash kind -> capacity (audio, video). Present only while the outage is active."""
    return f"{_tag(outage_id)}:cap"


def in_use(outage_id: str) -> str:
    """Hash kind -> ports in use across the outage."""
    return f"{_tag(outage_id)}:use"


def conference_use(outage_id: str) -> str:
    """Hash ``<conference>:<kind>`` -> ports in use by that conference."""
    return f"{_tag(outage_id)}:cuse"


def reserves(outage_id: str) -> str:
    """Hash ``<conference>:<kind>`` -> ports promised to that conference."""
    return f"{_tag(outage_id)}:resv"


def leases(outage_id: str) -> str:
    """Sorted set participant -> lease expiry (ms since epoch)."""
    return f"{_tag(outage_id)}:leases"


def lease_meta(outage_id: str) -> str:
    """Hash participant -> ``<conference>|<kind>``: what each live lease holds."""
    return f"{_tag(outage_id)}:lmeta"


def conferences(outage_id: str) -> str:
    """Hash conference id -> conference JSON."""
    return f"{_tag(outage_id)}:confs"


def participants(outage_id: str) -> str:
    """Hash participant id -> participant JSON (kept after leaving, with its final state)."""
    return f"{_tag(outage_id)}:parts"


def media_node_of(outage_id: str) -> str:
    """String: the media node the outage's conferences are placed on."""
    return f"{_tag(outage_id)}:node"


def ledger_keys(outage_id: str) -> list[str]:
    """The KEYS of every ledger script, always in this order."""
    return [
        capacity(outage_id),
        in_use(outage_id),
        conference_use(outage_id),
        reserves(outage_id),
        leases(outage_id),
        lease_meta(outage_id),
        conferences(outage_id),
        participants(outage_id),
        outage_doc(outage_id),
    ]


# --- global --------------------------------------------------------------------------------------
# Sorted set outage id -> declared-at (ms): every outage ever declared, for listing.
OUTAGES = f"{PREFIX}:outages"
# Set of active outage ids: what the lease sweeper and the expiry task walk.
ACTIVE_OUTAGES = f"{PREFIX}:outages:active"
# Counter behind ticket numbers.
TICKET_SEQ = f"{PREFIX}:ticket:seq"
# Shared HMAC secret for join tokens and node-to-node calls (SET NX by the first broker).
SECRET = f"{PREFIX}:secret"
# Pub/sub channel for events media nodes act on (participant left, outage ended ...).
EVENTS = f"{PREFIX}:events"
# Sorted set media node id -> last heartbeat (ms).
MEDIA_NODES = f"{PREFIX}:nodes"


def contract(number: str) -> str:
    """String: contract JSON."""
    return f"{PREFIX}:contract:{number}"


CONTRACTS = f"{PREFIX}:contracts"  # Set of contract numbers.


def contract_active_outage(number: str) -> str:
    """String: id of the contract's active outage (SET NX: one active outage per contract)."""
    return f"{PREFIX}:contract:{number}:active"


def idempotency(key: str) -> str:
    """String: outage id a declare with this Idempotency-Key produced (24 h)."""
    return f"{PREFIX}:idem:{key}"


def media_node(node_id: str) -> str:
    """Hash: a media node's address, capacity, load, state."""
    return f"{PREFIX}:node:{node_id}"

# Hash state -> how many outages ended in that state (restored, expired); active ones are ACTIVE_OUTAGES.
OUTAGE_END_COUNTS = f"{PREFIX}:outages:ended"
