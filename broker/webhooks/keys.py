"""Redis keys of the webhook queue. All share the hash tag ``{wh}`` so that one script may touch the
queue, a delivery and the dead-letter list together on a Redis Cluster.

(The ledger's keys are in ``quotas/keys.py``; these belong to the broker's webhook queue alone.)
"""

from __future__ import annotations

_TAG = "bp:{wh}"

# ZSET delivery id -> when it is due (ms since epoch); while a worker holds its lease, when the lease ends.
DUE = f"{_TAG}:due"

# LIST of JSON deliveries given up on (undelivered ``webhook_dead_after_s`` after the event), newest
# first, capped at DEAD_MAX entries.
DEAD = f"{_TAG}:dead"
DEAD_MAX = 10_000


def delivery(delivery_id: str) -> str:
    """HASH: msg_id, type, url, payload (the exact JSON body that is signed), created_ms, attempts,
    last_error, lease (the token of the worker delivering it now, or empty)."""
    return f"{_TAG}:d:{delivery_id}"


def throttle(name: str) -> str:
    """STRING with a TTL: an event with this throttle name was queued within its window."""
    return f"{_TAG}:throttle:{name}"
