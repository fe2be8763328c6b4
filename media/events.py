"""The broker's events a node acts on (published on ``quotas.keys.EVENTS``): the subscription, and
which of its peer connections each event closes. The broker has already released those ports."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.redisconn import is_cluster
from infra.text import as_str
from quotas import keys

log = logging.getLogger("backupplus.media.events")


async def listen(
    redis: Any, on_event: Callable[[str], None], ready: asyncio.Event, stopped: Callable[[], bool], node_id: str
) -> None:
    """Hand every event to ``on_event`` until ``stopped()``; ``ready`` is set once subscribed. A lost
    subscription is made again. On a Redis Cluster the channel is sharded (SSUBSCRIBE on the primary
    of its slot; the brokers SPUBLISH there), and after a failover the subscription is made again on
    the new primary."""
    sharded = is_cluster(redis)
    while not stopped():
        pubsub = redis.pubsub()
        try:
            if sharded:
                await pubsub.ssubscribe(keys.EVENTS)
            else:
                await pubsub.subscribe(keys.EVENTS)
            ready.set()
            while not stopped():
                if sharded:
                    msg = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                else:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg and msg.get("type") in ("message", "smessage"):
                    on_event(as_str(msg["data"]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.warning("media node %s: events subscription lost (%s); resubscribing", node_id, exc)
            await asyncio.sleep(0.5)
        finally:
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001, S110
                pass


@dataclass(frozen=True)
class Closing:
    """Peer connections to close: these participants, and every one of a conference or an outage."""

    reason: str
    pids: list[str] = field(default_factory=list)
    conference: str | None = None
    outage: str | None = None


def closing_for(raw: str) -> Closing | None:
    """What one event closes (``None``: nothing, or not an event)."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    pids = [str(p) for p in event.get("participants") or [] if isinstance(p, str)]
    if kind in ("participant_left", "participant_preempted") and event.get("participant"):
        return Closing(str(kind), [*pids, str(event["participant"])])
    if kind == "conference_closed":
        return Closing("conference_closed", pids, conference=event.get("conference"))
    if kind == "outage_ended":
        return Closing(f"outage_{event.get('state')}", pids, outage=event.get("outage"))
    return None
