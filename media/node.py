"""A media node: terminates participants' peer connections (aiortc) and runs one MCU room per conference.

Ports follow media: while a participant's peer connection is connected the node renews its lease in
the port ledger (state "connected", re-admitting a lease the ledger lost); when the connection fails
or closes the renewals stop and the lease runs out within seconds, unless the same participant comes
back with a new offer. Broker events (participant left or preempted, conference closed, outage ended)
and a renewal that finds the participant ended close the peer connection. The node registers itself in Redis (``quotas.nodes``) and
heartbeats every 2 s; ``begin_drain`` stops it taking new outages. Process-wide patches (``media.srtp``)
are the composition root's to install, not the node's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from infra.sdpcheck import InvalidSdp, check_offer
from infra.settings import Settings
from media import aiortc_compat, events, peer
from media.candidates import CandidateGuard
from media.errors import MediaNodeError
from media.members import Member
from media.peer import Offer, Session, read_offer
from media.room import Room
from media.sdp import (
    INBOUND_VIDEO_KBPS,
    announce_public_ip,
    cap_video_bandwidth,
    offered_kinds,
    without_end_of_candidates,
)
from media.tracks import AudioOutTrack, VideoOutTrack
from quotas import nodes as registry
from quotas.ledger import PortLedger
from quotas.secret import KeyStore

log = logging.getLogger("backupplus.media.node")

RENEW_INTERVAL_S = 2.0


class MediaNode:
    """One node: its peer connections (``sessions``), its rooms, its registry entry and its leases."""

    def __init__(
        self, settings: Settings, *, url: str | None = None, node_id: str | None = None, fps: float = 25.0
    ) -> None:
        self.settings = settings
        self.url = (url or settings.base_url).rstrip("/")
        self.node_id = node_id or f"n-{secrets.token_hex(5)}"
        self.capacity = settings.media_capacity_ports
        self.outage_ports = settings.audio_ports + settings.video_ports
        self.fps = fps
        self.ledger: Any = None
        self.connect_timeout_s = settings.media_connect_s
        self.redis: Any = None
        self.keys: KeyStore | None = None  # the key ring: verifies the broker's signed calls
        self.sessions: dict[str, Session] = {}
        self.rooms: dict[str, Room] = {}
        self.draining = False
        self.stopping = False
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._tasks: list[asyncio.Task[Any]] = []
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._publish_now = asyncio.Event()
        self._shutdown = False
        self._events_ready = asyncio.Event()
        self.dropped_candidates = 0  # remote ICE candidates refused by the policy (media.candidates)

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self, redis: Any) -> MediaNode:
        self.redis = redis
        self.keys = await KeyStore.load(redis, seed=self.settings.root_secret())
        self.ledger = PortLedger(redis)
        await self._publish()
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"media-heartbeat-{self.node_id}"),
            asyncio.create_task(
                events.listen(self.redis, self._on_event, self._events_ready, lambda: self._shutdown, self.node_id),
                name=f"media-events-{self.node_id}",
            ),
            asyncio.create_task(self._renew_loop(), name=f"media-renew-{self.node_id}"),
        ]
        try:
            await asyncio.wait_for(self._events_ready.wait(), 5)
        except TimeoutError:  # pragma: no cover - Redis very slow; the loop keeps trying
            log.warning("media node %s: events subscription not ready yet", self.node_id)
        log.info("media node %s up at %s (capacity %d, remote ICE candidates: %s)", self.node_id, self.url,
                 self.capacity, self.settings.media_remote_candidates)
        return self

    @property
    def load(self) -> int:
        return len(self.sessions)

    def hosted_outages(self) -> set[str]:
        return {s.outage for s in self.sessions.values()}

    def paths(self) -> dict[str, int]:
        """Connected sessions by media path, read from each one's nominated ICE candidate pair: ``relay``
        when either end is a TURN relay candidate (the participant is behind a firewall), else ``direct``."""
        counts = {"direct": 0, "relay": 0}
        for session in self.sessions.values():
            if not session.connected or session.closing:
                continue
            transceivers = session.pc.getTransceivers()
            if not transceivers:
                continue
            types = aiortc_compat.selected_candidate_types(transceivers[0].receiver.transport.transport)
            if types is not None:
                counts["relay" if "relay" in types else "direct"] += 1
        return counts

    def fields(self) -> dict[str, Any]:
        outages = self.hosted_outages()
        paths = self.paths()
        return {
            "sessions_direct": paths["direct"],
            "sessions_relay": paths["relay"],
            "url": self.url,
            "capacity": self.capacity,
            "load": self.load,
            "reserved": len(outages) * self.outage_ports,
            "outages": len(outages),
            "state": "draining" if self.draining else "ready",
            "started_at": self.started_at,
            "pid": os.getpid(),
            "dropped_candidates": self.dropped_candidates,
        }

    async def _publish(self) -> None:
        await registry.publish(self.redis, self.node_id, self.fields())

    def _bump(self) -> None:
        self._publish_now.set()

    async def _heartbeat_loop(self) -> None:
        while not self._shutdown:
            try:
                await self._publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis blip: keep going (dead to others after 5 s)
                log.warning("media node %s heartbeat failed: %s", self.node_id, exc)
            self._publish_now.clear()
            # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel racing the event
            waiter = asyncio.ensure_future(self._publish_now.wait())
            try:
                await asyncio.wait([waiter], timeout=registry.HEARTBEAT_S)
            finally:
                waiter.cancel()

    def begin_drain(self) -> None:
        """No new outages from now on; running calls continue."""
        if not self.draining:
            self.draining = True
            log.info("media node %s draining (%d sessions)", self.node_id, len(self.sessions))
            self._bump()

    async def drain(self, timeout: float) -> bool:
        """Drain, waiting until every call has ended or ``timeout``; True when none is left."""
        self.begin_drain()
        deadline = time.monotonic() + timeout
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return not self.sessions

    async def stop(self, *, release_state: str | None = "left/node_stopped", unregister: bool = True) -> None:
        """Close every peer connection (releasing its port), stop the loops, leave the registry."""
        self.stopping = True
        self.draining = True
        self._shutdown = True
        self._publish_now.set()
        await asyncio.gather(
            *(
                self.close_participant(pid, release=release_state, reason="node_stopping")
                for pid in list(self.sessions)
            ),
            return_exceptions=True,
        )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()
        if unregister and self.redis is not None:
            try:
                await registry.unregister(self.redis, self.node_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("media node %s: unregister failed: %s", self.node_id, exc)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
        return task

    # --- offers ------------------------------------------------------------------------------------
    async def handle_offer(
        self, participant: dict[str, Any], sdp: str, sdp_type: str = "offer"
    ) -> dict[str, str]:
        """Answer a participant's offer (non-trickle: the answer carries every local candidate). The
        offer is checked first (``infra.sdpcheck``; the broker did too): a refused one changes nothing,
        not even a connected participant's current connection."""
        try:
            check_offer(sdp)
        except InvalidSdp as exc:
            raise MediaNodeError("invalid_sdp", exc.reason, status=422) from None
        offer = self._accept(participant, sdp_type)
        await self._check_lease(offer)
        if offer.pid in self.sessions:  # a new offer from the same participant replaces its connection
            await self.close_participant(offer.pid, release=None, reason="replaced")
        session, room = self._open_session(offer)
        try:
            peer.add_tracks(session, room, offered_kinds(sdp), self._audio_sender, self._video_sender)
            guard = CandidateGuard(self.settings.media_remote_candidates, self._candidate_dropped)
            session.hooks.extend(guard.guard(session.pc))
            room.add(session.member)
            peer.tap_inbound(session, room)
            self._watch(session)
            await session.pc.setRemoteDescription(
                RTCSessionDescription(sdp=without_end_of_candidates(sdp), type="offer")
            )
            if guard.total:
                log.info("media node %s: %s's offer: %d remote candidates ignored (%s; policy %s)", self.node_id,
                         offer.pid, guard.total, ", ".join(f"{k} {v}" for k, v in sorted(guard.dropped.items())),
                         guard.policy)
            # non-trickle: setting the answer gathers every host candidate
            await session.pc.setLocalDescription(await session.pc.createAnswer())
        except MediaNodeError:
            await self.close_participant(offer.pid, release=None, reason="bad_offer", session=session)
            raise
        except Exception as exc:  # noqa: BLE001
            log.info("media node %s: %s's offer refused by aiortc: %s: %s", self.node_id, offer.pid,
                     type(exc).__name__, exc)
            await self.close_participant(offer.pid, release=None, reason="bad_offer", session=session)
            raise MediaNodeError("bad_offer", f"{type(exc).__name__}: {exc}", status=400) from None
        if session.closing:
            raise MediaNodeError("closed", "the participant was closed while negotiating", status=409)
        await self._hold_while_connecting(session)
        session.tasks.append(
            asyncio.create_task(self._connect_deadline(session), name=f"connect-deadline-{offer.pid}")
        )
        local = session.pc.localDescription
        answer = cap_video_bandwidth(local.sdp, INBOUND_VIDEO_KBPS)
        if self.settings.media_public_ip:
            answer = announce_public_ip(answer, self.settings.media_public_ip)
        return {"type": local.type, "sdp": answer}

    def _accept(self, participant: dict[str, Any], sdp_type: str) -> Offer:
        """Read the participant document; refuse what this node will not take (stopping, draining, full)."""
        offer = read_offer(participant, sdp_type)
        if self.stopping:
            raise MediaNodeError("node_stopping", status=503)
        hosted = offer.outage in self.hosted_outages()
        if not hosted and self.draining:
            raise MediaNodeError("draining", "this media node takes no new conferences", status=503)
        if not hosted and (len(self.hosted_outages()) + 1) * self.outage_ports > self.capacity:
            raise MediaNodeError("node_full", "no room for another outage", status=503)
        return offer

    async def _check_lease(self, offer: Offer) -> None:
        """The node answers only for a participant the ledger holds a live lease for, in the conference
        and of the kind the offer names: whoever could call the node gets no media without a port."""
        if self.ledger is None:
            return
        known = await self.ledger.participant(offer.outage, offer.pid)
        if (
            known is None
            or known.lease_expires_ms is None
            or known.state not in ("admitted", "connected")
            or known.conference != offer.conference
            or (known.kind or offer.kind) != offer.kind
        ):
            raise MediaNodeError("participant_gone", "the ledger holds no live port for this participant", status=410)

    def _open_session(self, offer: Offer) -> tuple[Session, Room]:
        """A peer connection for the participant, in its conference's room (made if needed)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        room = self.rooms.get(offer.conference)
        if room is None or room.closed:
            room = self._new_room(offer.conference)
            self.rooms[offer.conference] = room
        member = Member(pid=offer.pid, display_name=offer.name, kind=offer.kind)
        session = Session(
            pid=offer.pid,
            outage=offer.outage,
            conference=offer.conference,
            kind=offer.kind,
            pc=pc,
            member=member,
        )
        self.sessions[offer.pid] = session
        self._bump()
        return session, room

    def _candidate_dropped(self, kind: str) -> None:
        self.dropped_candidates += 1

    # The benchmark's node (benchmarks/media_node_bench.py) overrides these three.
    def _new_room(self, conference: str) -> Room:
        return Room(conference, fps=self.fps)

    def _audio_sender(self, session: Session, sender: RTCRtpSender, track: AudioOutTrack) -> None:
        """Wire the sender of what a participant hears: the room sends its RTP."""
        peer.send_directly(session, sender, track)

    def _video_sender(self, session: Session, room: Room, sender: RTCRtpSender, track: VideoOutTrack) -> None:
        """Wire the sender of the grid a participant sees: its feedback reaches the room's shared encoder,
        and the room sends its RTP."""
        peer.route_feedback(session, room, sender)
        peer.send_directly(session, sender, track)

    def _watch(self, session: Session) -> None:
        """Connected starts the lease; failed or closed ends the session but not the lease: the same
        participant may come back with a new offer (an ICE restart, a reloaded page: browsers close
        their peer connections when a page unloads), and unrenewed the lease runs out within seconds.
        Leaving on purpose is a DELETE, which frees the port at once."""
        pc, pid = session.pc, session.pid

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if session.closing:
                return
            if state == "connected" and not session.connected:
                session.connected = True
                self._bump()  # the heartbeat carries the sessions' media paths
                self._spawn(self._renew_one(session), name=f"renew-first-{pid}")
            elif state in ("failed", "closed"):
                self._spawn(
                    self.close_participant(pid, release=None, reason=f"pc_{state}", session=session),
                    name=f"close-{pid}",
                )

    async def _hold_while_connecting(self, session: Session) -> None:
        """An offered participant keeps its port while it connects (until the connect deadline)."""
        if self.ledger is None:
            return
        ttl_ms = int(self.connect_timeout_s * 1000)
        result = await self.ledger.renew(session.outage, session.pid, ttl_ms)
        if result.status == "gone":
            await self.close_participant(session.pid, release=None, reason=f"lease_{result.reason}", session=session)
            raise MediaNodeError("participant_gone", "the participant's port was released", status=410)

    async def _connect_deadline(self, session: Session) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if not session.connected and not session.closing:
            await self.close_participant(
                session.pid, release="left/connect_timeout", reason="connect_timeout", session=session
            )

    # --- closing -----------------------------------------------------------------------------------
    async def close_participant(
        self, pid: str, *, release: str | None, reason: str, session: Session | None = None
    ) -> None:
        """Close a participant's peer connection; ``release`` = final state for the ledger, or None when
        the broker already freed the port (events, lease gone)."""
        session = session or self.sessions.get(pid)
        if session is None:
            return
        if session.closing:
            await session.closed.wait()
            return
        session.closing = True
        log.info("media node %s: closing %s (%s)", self.node_id, pid, reason)
        try:
            if self.sessions.get(pid) is session:
                del self.sessions[pid]
            if release is not None and self.ledger is not None:
                try:
                    await self.ledger.release(session.outage, pid, final_state=release)
                except Exception as exc:  # noqa: BLE001
                    log.warning("release of %s failed: %s", pid, exc)
            current = asyncio.current_task()
            for task in session.tasks:
                if task is not current:
                    task.cancel()
            room = self.rooms.get(session.conference)
            if room is not None:
                room.remove(pid)
                if not room.members:
                    self.rooms.pop(session.conference, None)
                    await room.close()
            try:
                await asyncio.wait_for(session.pc.close(), 5)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the peer connection of %s: %s", pid, exc)
            session.unhook()
            self._bump()
        finally:
            session.closed.set()

    async def close_where(
        self,
        *,
        outage: str | None = None,
        conference: str | None = None,
        pids: list[str] | None = None,
        reason: str,
    ) -> int:
        targets = set(pids or [])
        for pid, s in self.sessions.items():
            if (outage and s.outage == outage) or (conference and s.conference == conference):
                targets.add(pid)
        targets &= set(self.sessions)
        await asyncio.gather(*(self.close_participant(p, release=None, reason=reason) for p in targets))
        return len(targets)

    # --- leases ------------------------------------------------------------------------------------
    async def _renew_one(self, session: Session) -> None:
        if session.closing:
            return
        ttl_ms = int(self.settings.media_lease_s * 1000)
        try:
            # readmit: a lease the ledger lost (no decision ended it) is admitted again if a port is free
            result = await self.ledger.renew(
                session.outage, session.pid, ttl_ms, state="connected", conference=session.conference,
                kind=session.kind, readmit=True,
            )
        except Exception as exc:  # noqa: BLE001
            log.warning("renew of %s failed: %s", session.pid, exc)
            return
        if result.status == "readmitted":
            log.warning("media node %s: %s was unknown to the ledger and is admitted again", self.node_id, session.pid)
        if result.status == "gone" and not session.closing:
            await self.close_participant(session.pid, release=None, reason=f"lease_{result.reason}", session=session)

    async def _renew_loop(self) -> None:
        while not self._shutdown:
            await asyncio.sleep(RENEW_INTERVAL_S)
            live = [s for s in self.sessions.values() if s.connected and not s.closing]
            if live:
                await asyncio.gather(*(self._renew_one(s) for s in live), return_exceptions=True)

    # --- events ------------------------------------------------------------------------------------
    def _on_event(self, raw: str) -> None:
        closing = events.closing_for(raw)
        if closing is not None:
            close = self.close_where(
                outage=closing.outage, conference=closing.conference, pids=closing.pids, reason=closing.reason
            )
            self._spawn(close, name=f"event-{closing.reason}")
