"""The MCU end to end over loopback: aiortc clients <-> a media node, state seeded through the ledger."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

from infra.settings import Settings
from media import aiortc_compat
from media.grid_encoder import MAX_BITRATE, MIN_BITRATE
from media.node import MediaNode
from media.routing import MediaRouter
from quotas import keys
from quotas.ledger import PortLedger
from tests.support.media_clients import (
    COLOURS,
    Client,
    ColourTrack,
    ToneTrack,
    admit,
    frame_has_colour,
    seed_conference,
    until,
)

pytestmark = [pytest.mark.media, pytest.mark.timeout(90)]

# No tone within 80 Hz of a 2nd/3rd-order product of the others (a±b, 2a−b, a+b−c): mixing and
# coding make such products, and with 440/660/880/1100 (all multiples of 220 Hz) they landed exactly
# on each participant's own frequency, reading as an "own voice" under CPU load.
TONES = {"red": 480.0, "green": 640.0, "blue": 880.0, "phone": 1200.0}




def m_section(sdp: str, kind: str) -> str:
    parts = re.split(r"(?m)^(?=m=)", sdp)
    return next(p for p in parts if p.startswith(f"m={kind}"))


@pytest.fixture
async def node(redis):
    node = MediaNode(Settings(media_lease_s=3.0, media_remote_candidates="loopback"), url="http://127.0.0.1:9")  # unrenewed, a lease ends soon
    await node.start(redis)
    try:
        yield node
    finally:
        await node.stop()


async def part_state(redis, oid: str, pid: str) -> str | None:
    found = await PortLedger(redis).participant(oid, pid)
    return found.state if found else None


async def test_conference_mix_and_leave(redis, node):
    ledger = PortLedger(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger)
    clients: dict[str, Client] = {}
    for name in ("red", "green", "blue"):
        p = await admit(ledger, oid, cid, name, "video")
        clients[name] = Client(
            p, audio=ToneTrack(TONES[name]), video=ColourTrack(COLOURS[name], 1280, 720, fps=10)
        )
    phone = await admit(ledger, oid, cid, "phone", "audio")
    clients["phone"] = Client(phone, audio=ToneTrack(TONES["phone"]), want_video=True)
    try:
        for c in clients.values():
            await c.connect(router.offer)
        for c in clients.values():
            await c.wait_connected()
        assert await redis.get(keys.media_node_of(oid)) == node.node_id

        # the answer: VP8 only for video, bandwidth capped; the audio participant's video is inactive
        video_m = m_section(clients["red"].answer_sdp, "video")
        codecs = {c.lower() for c in re.findall(r"a=rtpmap:\d+ ([\w-]+)/", video_m)}
        assert codecs <= {"vp8", "rtx"} and "vp8" in codecs
        assert "b=AS:" in video_m and "b=TIAS:" in video_m
        assert "a=inactive" in m_section(clients["phone"].answer_sdp, "video")

        videos = [clients[n] for n in ("red", "green", "blue")]

        def all_see_colours() -> bool:
            return all(
                c.last_frame is not None
                and all(frame_has_colour(c.last_frame, COLOURS[n]) for n in ("red", "green", "blue"))
                for c in videos
            )

        await until(all_see_colours, 15)
        await until(
            lambda: all(
                c.tone_level(TONES["phone"], 0.5) > 200 for c in clients.values() if c is not clients["phone"]
            ),
            10,
        )
        await asyncio.sleep(1.0)
        for name, c in clients.items():
            own = c.tone_level(TONES[name])
            others = [c.tone_level(f) for n, f in TONES.items() if n != name]
            assert min(others) > 200, (name, others)
            # mix-minus: not your own voice. Under CPU load, concealed late packets spread noise over
            # the whole spectrum, some of it at one's own frequency: that is no tone (no peak above
            # the audio around it), while one's own voice mixed in would be as loud as the others.
            prominence = c.tone_prominence(TONES[name])
            assert own < min(others) / 20 or prominence < 8, (name, own, others, prominence)
            assert own < min(others) / 4, (name, own, others)
        for c in videos:
            assert c.video_frames >= 5 and c.max_height <= 480
        assert clients["phone"].video_tracks == 0 and clients["phone"].video_frames == 0
        for p in (c.participant for c in clients.values()):
            assert await part_state(redis, oid, p["id"]) == "connected"

        # one shared encoder: a PLI from any receiver makes the next shared frame a keyframe; the bitrate
        # follows the receivers' REMB
        room = node.rooms[cid]
        red_sender = next(
            t.sender
            for t in node.sessions[clients["red"].participant["id"]].pc.getTransceivers()
            if t.kind == "video"
        )
        await until(lambda: time.monotonic() - room.video.last_keyframe_at > 0.6, 3)
        before = room.video.keyframes
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=aiortc_compat.sender_ssrc(red_sender))
        await aiortc_compat.handle_rtcp(red_sender, pli)
        await until(lambda: room.video.keyframes == before + 1, 1)
        await until(lambda: any(m.remb for m in room.members.values()), 5)
        assert MIN_BITRATE <= room.video.target_bitrate() <= MAX_BITRATE

        # DELETE participant (the broker releases the port and publishes the event): media closes < 2 s
        blue = clients["blue"].participant
        assert await ledger.release(oid, blue["id"], "left")
        await redis.publish(
            keys.EVENTS, json.dumps({"type": "participant_left", "outage": oid, "participant": blue["id"]})
        )
        took = await until(lambda: blue["id"] not in node.sessions, 2.0)
        assert took < 2.0
        # blue's voice is gone from the mix (the last 0.5 s red heard holds no 880 Hz)
        await until(lambda: clients["red"].tone_level(TONES["blue"], 0.5) < 50, 5)

        # a participant hanging up on its own: its session closes at once, and its port comes back when
        # its lease, no longer renewed, runs out (the same participant could come back meanwhile)
        before = (await ledger.usage(oid))["in_use"]["video"]
        await clients["green"].close()
        gid = clients["green"].participant["id"]
        await until(lambda: gid not in node.sessions, 5)

        async def port_back() -> bool:
            await ledger.reclaim_expired(oid)
            return (await ledger.usage(oid))["in_use"]["video"] == before - 1

        await until(port_back, 6, step=0.2)
        assert await part_state(redis, oid, gid) == "left"

        # conference closed: every remaining peer connection closed within 2 s
        rest = [c.participant["id"] for n, c in clients.items() if n in ("red", "phone")]
        await ledger.remove_conference(oid, cid)
        await redis.publish(
            keys.EVENTS,
            json.dumps({"type": "conference_closed", "outage": oid, "conference": cid, "participants": rest}),
        )
        await until(lambda: not node.sessions and not node.rooms, 2.0)
    finally:
        for c in clients.values():
            await c.close()
        await router.close()


async def test_lease_gone_closes_media(redis, node):
    """Restore/expiry without an event reaching us: the next renew finds the lease gone and closes."""
    ledger = PortLedger(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger)
    p = await admit(ledger, oid, cid, "solo", "audio")
    c = Client(p, audio=ToneTrack(500), want_video=False)
    try:
        await c.connect(router.offer)
        await c.wait_connected()
        await until(lambda: p["id"] in node.sessions and node.sessions[p["id"]].connected, 5)
        assert await ledger.release(oid, p["id"], "left")  # no event published
        await until(lambda: p["id"] not in node.sessions, 4.5)  # renew every 2 s

    finally:
        await c.close()
        await router.close()


async def test_outage_ended_event_closes_all(redis, node):
    ledger = PortLedger(redis)
    router = MediaRouter(redis, Settings(), local_node=node)
    oid, cid = await seed_conference(ledger)
    clients = [
        Client(
            await admit(ledger, oid, cid, f"a{i}", "audio"), audio=ToneTrack(300 + 100 * i), want_video=False
        )
        for i in range(2)
    ]
    try:
        for c in clients:
            await c.connect(router.offer)
        for c in clients:
            await c.wait_connected()
        closed = await ledger.close_outage(oid, "restored", 0)
        assert closed is not None
        released = closed[0]
        await redis.publish(
            keys.EVENTS,
            json.dumps(
                {"type": "outage_ended", "outage": oid, "state": "restored", "participants": released}
            ),
        )
        took = await until(lambda: not node.sessions, 2.0)
        assert took < 2.0
        await until(lambda: all(c.pc.connectionState in ("closed", "failed") for c in clients), 5)
    finally:
        for c in clients:
            await c.close()
        await router.close()
