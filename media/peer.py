"""One participant's peer connection on a node: who the offer is for, and how its connection is wired
to its room (the mix and the grid it receives, the streams it sends, its feedback). The hooks put on
aiortc's objects are kept on the session and removed when it closes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from media import aiortc_compat, outbound
from media.errors import MediaNodeError
from media.feedback import throttle_remb
from media.inbound import receiver_of
from media.members import Member
from media.room import Room
from media.sdp import vp8_preferences
from media.tracks import AudioOutTrack, VideoOutTrack


@dataclass(frozen=True)
class Offer:
    """Who an offer is for, read from the participant document the broker hands over."""

    pid: str
    outage: str
    conference: str
    kind: str  # granted: audio | video
    name: str


def read_offer(participant: dict[str, Any], sdp_type: str) -> Offer:
    if sdp_type != "offer":
        raise MediaNodeError("bad_offer", f"expected an offer, got {sdp_type!r}", status=400)
    try:
        pid = str(participant["id"])
        outage = str(participant["outage"])
        conference = str(participant["conference"])
    except KeyError as exc:
        raise MediaNodeError("bad_participant", f"missing {exc}", status=400) from None
    kind = "video" if participant.get("kind") == "video" else "audio"
    name = str(participant.get("display_name") or pid)
    return Offer(pid=pid, outage=outage, conference=conference, kind=kind, name=name)


@dataclass(eq=False)
class Session:
    pid: str
    outage: str
    conference: str
    kind: str
    pc: RTCPeerConnection
    member: Member
    connected: bool = False
    closing: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    hooks: list[aiortc_compat.Hook] = field(default_factory=list)  # removed when the session closes

    def unhook(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()


AudioWiring = Callable[[Session, RTCRtpSender, AudioOutTrack], None]
VideoWiring = Callable[[Session, Room, RTCRtpSender, VideoOutTrack], None]


def add_tracks(
    session: Session, room: Room, kinds: list[str], audio_sender: AudioWiring, video_sender: VideoWiring
) -> None:
    """What the participant receives: the mix for every participant, the grid for video ones (an
    audio participant's video m-line is answered inactive). Transceivers are made before the offer
    is applied, so the VP8-only codec preference binds; each sender is then wired by the caller."""
    pc, member = session.pc, session.member
    if "audio" in kinds:
        member.audio_out = AudioOutTrack()
        sender = pc.addTransceiver(member.audio_out, direction="sendrecv").sender
        audio_sender(session, sender, member.audio_out)
    if "video" in kinds:
        if member.kind == "video":
            member.video_out = VideoOutTrack(room)
            transceiver = pc.addTransceiver(member.video_out, direction="sendrecv")
        else:
            transceiver = pc.addTransceiver("video", direction="inactive")
        transceiver.setCodecPreferences(vp8_preferences())
        if member.video_out is not None:
            video_sender(session, room, transceiver.sender, member.video_out)


def send_directly(session: Session, sender: RTCRtpSender, track: AudioOutTrack | VideoOutTrack) -> None:
    """The room sends this sender's RTP (media.outbound), not aiortc's task."""
    session.hooks.extend(outbound.install(sender, track))


def route_feedback(session: Session, room: Room, sender: RTCRtpSender) -> None:
    """A receiver's PLI/FIR asks the room's shared encoder for a keyframe; its REMB sets its member's
    bitrate estimate, which the encoder follows (the lowest)."""
    member = session.member

    def read_remb(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if aiortc_compat.sender_ssrc(sender) in ssrcs:
                    member.remb = bitrate
            except ValueError:
                pass

    session.hooks.append(aiortc_compat.replace_send_keyframe(sender, room.request_keyframe))
    session.hooks.append(aiortc_compat.observe_rtcp(sender, read_remb))


def tap_inbound(session: Session, room: Room) -> None:
    """What the participant sends is decoded by the room (media.inbound), not by a decoder thread per
    receiver; the REMBs its receivers send back are throttled (media.feedback)."""
    pc = session.pc

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        receiver = receiver_of(pc, track)
        if receiver is not None:
            room.attach_inbound(session.member, receiver, track.kind)
            session.hooks.append(throttle_remb(receiver))
