"""media.mixer without the network: talk detection, mix-minus for talkers, one shared encode for
listeners, the room's audio clock, and the compositor's 480-line canvas. Real libopus and libswscale."""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import numpy as np
import pytest

from media.mixer import (
    AUDIO_SAMPLES,
    CANVAS_H,
    CANVAS_W,
    MAX_HELD_TICKS,
    MIX_DEPTH,
    TALK_HANGOVER_TICKS,
    AudioOutTrack,
    Compositor,
    LatencyStats,
    Member,
    Room,
    VideoOutTrack,
    grid,
)

pytestmark = pytest.mark.media


def tone(freq: float, amplitude: float) -> np.ndarray:
    """20 ms of a tone; a multiple of 50 Hz, so that chunks join without a phase jump."""
    t = np.arange(AUDIO_SAMPLES) / 48000
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int32)


def feed(member: Member, chunk: np.ndarray, times: int = 1) -> None:
    for _ in range(times):
        member.audio_buf.append(chunk.copy())
        member.audio_buffered += len(chunk)


def decoded_level(packets: list[av.Packet], decoder: Any) -> float:
    samples = []
    for packet in packets:
        for frame in decoder.decode(av.Packet(bytes(packet))):
            samples.append(frame.to_ndarray().astype(float).ravel())
    return float(np.sqrt(np.mean(np.concatenate(samples) ** 2))) if samples else 0.0


@pytest.fixture
async def room() -> Any:
    r = Room("c-test")
    yield r
    await r.close()


def add_member(room: Room, pid: str) -> Member:
    member = Member(pid=pid, display_name=pid, kind="audio")
    member.audio_out = AudioOutTrack()
    room.members[pid] = member
    return member


async def test_talkers_get_their_own_mix_listeners_share_one(room: Room) -> None:
    talker_a, talker_b = add_member(room, "a"), add_member(room, "b")
    listeners = [add_member(room, f"l{i}") for i in range(4)]
    for _ in range(6):
        feed(talker_a, tone(400, 8000))
        feed(talker_b, tone(700, 8000))
        for listener in listeners:
            feed(listener, np.random.default_rng(0).normal(0, 20, AUDIO_SAMPLES).astype(np.int32))  # room noise
    room.mix_once()
    before = room.audio_encodes
    out = dict(room.mix_once())
    assert set(out) == {m.audio_out for m in (talker_a, talker_b, *listeners)}
    assert talker_a.talk_ticks == TALK_HANGOVER_TICKS and listeners[0].talk_ticks == 0
    shared = out[listeners[0].audio_out]
    assert all(out[m.audio_out] is shared for m in listeners)  # the same packets for every listener
    assert out[talker_a.audio_out] is not shared and out[talker_b.audio_out] is not out[talker_a.audio_out]
    assert room.audio_encodes - before == 3  # 2 talkers' own + 1 shared, instead of 6
    pts = {p.pts for packets in out.values() for p in packets}
    assert len(pts) == 1  # one room clock for every encoder


async def test_mix_minus_content(room: Room) -> None:
    """A talker hears the other talker, not themselves; a listener hears both; the gate keeps the
    listeners' noise out of everyone's mix."""
    a, b, listener = add_member(room, "a"), add_member(room, "b"), add_member(room, "l")
    for _ in range(40):
        feed(a, tone(400, 8000))
        feed(b, tone(1000, 8000))
        feed(listener, np.zeros(AUDIO_SAMPLES, dtype=np.int32))
    got: dict[Any, list[av.Packet]] = {a.audio_out: [], b.audio_out: [], listener.audio_out: []}
    for _ in range(30):
        for track, packets in room.mix_once():
            got[track].extend(packets)

    def spectrum_of(packets: list[av.Packet]) -> tuple[float, float]:
        levels = spectrum(packets, [400, 1000])
        return levels[400], levels[1000]

    a400, a1000 = spectrum_of(got[a.audio_out])
    b400, b1000 = spectrum_of(got[b.audio_out])
    l400, l1000 = spectrum_of(got[listener.audio_out])
    assert a1000 > 20 * a400  # a hears b, not itself
    assert b400 > 20 * b1000  # b hears a, not itself
    assert l400 > 0 and l1000 > 0 and 0.5 < l400 / l1000 < 2  # the listener hears both


async def test_a_talker_keeps_talking_through_short_pauses(room: Room) -> None:
    a, listener = add_member(room, "a"), add_member(room, "l")
    silence = np.zeros(AUDIO_SAMPLES, dtype=np.int32)
    feed(listener, silence, 200)
    feed(a, tone(500, 8000), 3)
    feed(a, silence, TALK_HANGOVER_TICKS + 5)
    ticks_talking = 0
    for _ in range(TALK_HANGOVER_TICKS + 8):
        room.mix_once()
        ticks_talking += a.talk_ticks > 0
    # 3 ticks of tone, then the hangover (counted down from the last tone tick), then quiet
    assert ticks_talking == 3 + TALK_HANGOVER_TICKS - 1
    assert a.talk_ticks == 0


async def test_audio_thread_delivers_to_the_tracks(room: Room) -> None:
    member = add_member(room, "a")
    other = add_member(room, "b")
    room.add(member)  # starts the audio thread
    room.add(other)
    feed(member, tone(400, 8000), 10)
    packet = await _next_packet(member.audio_out)
    assert packet.time_base == fractions.Fraction(1, 48000) and bytes(packet)


async def _next_packet(track: AudioOutTrack | None) -> av.Packet:
    assert track is not None
    return await asyncio.wait_for(track.recv(), 2)


def test_grid_cells_fit_the_480_line_canvas() -> None:
    for n in range(1, 19):
        cells = grid(n)
        assert len(cells) == n
        for x, y, w, h in cells:
            assert x % 2 == y % 2 == w % 2 == h % 2 == 0
            assert 0 <= x and x + w <= CANVAS_W and 0 <= y and y + h <= CANVAS_H


def test_compositor_scales_1080p_into_its_tile() -> None:
    big = av.VideoFrame.from_ndarray(np.full((1080 * 3 // 2, 1920), 200, dtype=np.uint8), format="yuv420p")
    compositor = Compositor()
    canvas = compositor.compose([("p1", "Big", big, 1), ("p2", "Other", None, 0)])
    assert canvas.shape == (CANVAS_H * 3 // 2, CANVAS_W)
    x, y, w, h = grid(2)[0]
    painted = np.argwhere(canvas[y : y + h, x : x + w] == 200)
    rows, cols = np.ptp(painted[:, 0]) + 1, np.ptp(painted[:, 1]) + 1
    assert cols == w and abs(rows - w * 9 / 16) <= 4  # the whole width of its tile, 16:9 kept ...
    x2, y2, w2, h2 = grid(2)[1]
    assert (canvas[y2 : y2 + h2, x2 : x2 + w2] == 200).sum() == 0  # ... and nowhere else
    again = compositor.compose([("p1", "Big", big, 1), ("p2", "Other", None, 0)])
    assert again is canvas  # unchanged tiles are not redrawn: the same buffer comes back


async def test_the_compositor_skips_ticks_while_a_sender_is_behind() -> None:
    """A composed frame still waiting for one receiver's sender holds the next ticks (at most
    MAX_HELD_TICKS in a row), so frames do not queue up behind a lagging loop; once the sender takes
    its frames again, every tick composes."""
    stats = LatencyStats()
    room = Room("c-hold", stats=stats)

    async def take_all(track: VideoOutTrack) -> None:
        while True:
            await track.recv()

    readers: list[asyncio.Task[None]] = []
    try:
        a, b = (Member(pid=pid, display_name=pid, kind="video") for pid in ("a", "b"))
        for member in (a, b):
            member.video_out = VideoOutTrack(room)
            room.add(member)
        assert a.video_out is not None and b.video_out is not None
        readers.append(asyncio.ensure_future(take_all(a.video_out)))
        await asyncio.wait_for(b.video_out.recv(), 2)  # b's sender starts, takes one frame, then stalls
        await asyncio.sleep(0.8)  # 20 ticks at 25 fps
        assert stats.held >= 6
        assert stats.composed <= 12
        assert 1 <= b.video_out.waiting() <= 20 // (MAX_HELD_TICKS + 1) + 1
        held_stalled = stats.held

        readers.append(asyncio.ensure_future(take_all(b.video_out)))  # b catches up
        await asyncio.sleep(0.2)
        held, composed = stats.held, stats.composed
        await asyncio.sleep(0.8)
        assert stats.composed - composed >= 10
        assert stats.held - held <= 3
        assert held_stalled <= held
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await room.close()


async def test_only_the_loudest_talkers_are_mixed(room: Room) -> None:
    """Eight talk at once: the MIX_DEPTH loudest are mixed (each hearing the others), the rest hear the
    shared mix like the listeners; a mixed talker who falls silent gives its place to the next loudest."""
    freqs = [300, 500, 700, 900, 1100, 1300, 1500, 1700]
    talkers = [add_member(room, f"t{i}") for i in range(len(freqs))]
    listener = add_member(room, "l")
    silence = np.zeros(AUDIO_SAMPLES, dtype=np.int32)
    levels = [8000 - 900 * i for i in range(len(freqs))]  # t0 loudest
    for member, freq, level in zip(talkers, freqs, levels):
        feed(member, tone(freq, level), 60)
    feed(listener, silence, 60)
    got: dict[Any, list[av.Packet]] = {}
    for tick in range(30):
        before = room.audio_encodes
        out = room.mix_once()
        if tick >= 2:
            assert room.audio_encodes - before == MIX_DEPTH + 1  # the mixed talkers' own + 1 shared
        for track, packets in out:
            got.setdefault(track, []).extend(packets)
    assert [m.mixed for m in talkers] == [True] * MIX_DEPTH + [False] * (len(freqs) - MIX_DEPTH)
    out = dict(room.mix_once())
    shared = out[listener.audio_out]
    assert all(out[m.audio_out] is shared for m in talkers[MIX_DEPTH:])  # left out: they hear the mix
    assert all(out[m.audio_out] is not shared for m in talkers[:MIX_DEPTH])

    heard = spectrum(got[listener.audio_out], freqs)
    loudest_left_out = max(heard[f] for f in freqs[MIX_DEPTH:])
    assert min(heard[f] for f in freqs[:MIX_DEPTH]) > 10 * loudest_left_out
    own = spectrum(got[talkers[0].audio_out], freqs)
    assert own[freqs[1]] > 10 * own[freqs[0]]  # the loudest hears the next one, not itself

    talkers[0].audio_buf.clear()  # t0 stops talking: after ~100 ms t5, the loudest left out, comes in
    talkers[0].audio_buffered = 0
    feed(talkers[0], silence, 40)
    for _ in range(12):
        room.mix_once()
    assert not talkers[0].mixed and talkers[0].talk_ticks > 0  # still in its hangover, but quiet
    assert [m.mixed for m in talkers[1:]] == [True] * MIX_DEPTH + [False] * (len(freqs) - 1 - MIX_DEPTH)


def spectrum(packets: list[av.Packet], freqs: list[int]) -> dict[int, float]:
    """Magnitude at each frequency of the last 0.5 s of an Opus stream."""
    decoder: Any = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "mono", 48000
    pcm = np.concatenate(
        [f.to_ndarray().astype(float).ravel() for p in packets for f in decoder.decode(av.Packet(bytes(p)))]
    )[-24000:]
    spec = np.abs(np.fft.rfft(pcm))
    bins = np.fft.rfftfreq(len(pcm), 1 / 48000)
    return {f: float(spec[np.argmin(abs(bins - f))]) for f in freqs}
