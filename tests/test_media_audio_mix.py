"""media.audio_mix without the network: talk detection, mix-minus for talkers, one shared encode for
listeners, the room's audio clock, the mixing depth. Real libopus."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest

from media.audio_mix import MIX_DEPTH, TALK_HANGOVER_TICKS, AudioMixer
from media.members import Member
from media.mix_encoder import AUDIO_SAMPLES
from media.tracks import AudioOutTrack

pytestmark = pytest.mark.media


def tone(freq: float, amplitude: float) -> np.ndarray:
    """20 ms of a tone; a multiple of 50 Hz, so that chunks join without a phase jump."""
    t = np.arange(AUDIO_SAMPLES) / 48000
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int32)


def feed(member: Member, chunk: np.ndarray, times: int = 1) -> None:
    for _ in range(times):
        member.audio_buf.append(chunk.copy())
        member.audio_buffered += len(chunk)


@pytest.fixture
def mixer() -> AudioMixer:
    return AudioMixer({})


def add_member(mixer: AudioMixer, pid: str) -> Member:
    member = Member(pid=pid, display_name=pid, kind="audio")
    member.audio_out = AudioOutTrack()
    mixer.members[pid] = member
    return member


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


def test_talkers_get_their_own_mix_listeners_share_one(mixer: AudioMixer) -> None:
    talker_a, talker_b = add_member(mixer, "a"), add_member(mixer, "b")
    listeners = [add_member(mixer, f"l{i}") for i in range(4)]
    for _ in range(6):
        feed(talker_a, tone(400, 8000))
        feed(talker_b, tone(700, 8000))
        for listener in listeners:
            feed(listener, np.random.default_rng(0).normal(0, 20, AUDIO_SAMPLES).astype(np.int32))  # room noise
    mixer.mix_once()
    before = mixer.encodes
    out = dict(mixer.mix_once())
    assert set(out) == {m.audio_out for m in (talker_a, talker_b, *listeners)}
    assert talker_a.talk_ticks == TALK_HANGOVER_TICKS and listeners[0].talk_ticks == 0
    shared = out[listeners[0].audio_out]
    assert all(out[m.audio_out] is shared for m in listeners)  # the same packets for every listener
    assert out[talker_a.audio_out] is not shared and out[talker_b.audio_out] is not out[talker_a.audio_out]
    assert mixer.encodes - before == 3  # 2 talkers' own + 1 shared, instead of 6
    pts = {p.pts for packets in out.values() for p in packets}
    assert len(pts) == 1  # one room clock for every encoder


def test_mix_minus_content(mixer: AudioMixer) -> None:
    """A talker hears the other talker, not themselves; a listener hears both; the gate keeps the
    listeners' noise out of everyone's mix."""
    a, b, listener = add_member(mixer, "a"), add_member(mixer, "b"), add_member(mixer, "l")
    for _ in range(40):
        feed(a, tone(400, 8000))
        feed(b, tone(1000, 8000))
        feed(listener, np.zeros(AUDIO_SAMPLES, dtype=np.int32))
    got: dict[Any, list[av.Packet]] = {a.audio_out: [], b.audio_out: [], listener.audio_out: []}
    for _ in range(30):
        for track, packets in mixer.mix_once():
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


def test_a_talker_keeps_talking_through_short_pauses(mixer: AudioMixer) -> None:
    a, listener = add_member(mixer, "a"), add_member(mixer, "l")
    silence = np.zeros(AUDIO_SAMPLES, dtype=np.int32)
    feed(listener, silence, 200)
    feed(a, tone(500, 8000), 3)
    feed(a, silence, TALK_HANGOVER_TICKS + 5)
    ticks_talking = 0
    for _ in range(TALK_HANGOVER_TICKS + 8):
        mixer.mix_once()
        ticks_talking += a.talk_ticks > 0
    # 3 ticks of tone, then the hangover (counted down from the last tone tick), then quiet
    assert ticks_talking == 3 + TALK_HANGOVER_TICKS - 1
    assert a.talk_ticks == 0


def test_only_the_loudest_talkers_are_mixed(mixer: AudioMixer) -> None:
    """Eight talk at once: the MIX_DEPTH loudest are mixed (each hearing the others), the rest hear the
    shared mix like the listeners; a mixed talker who falls silent gives its place to the next loudest."""
    freqs = [300, 500, 700, 900, 1100, 1300, 1500, 1700]
    talkers = [add_member(mixer, f"t{i}") for i in range(len(freqs))]
    listener = add_member(mixer, "l")
    silence = np.zeros(AUDIO_SAMPLES, dtype=np.int32)
    levels = [8000 - 900 * i for i in range(len(freqs))]  # t0 loudest
    for member, freq, level in zip(talkers, freqs, levels):
        feed(member, tone(freq, level), 60)
    feed(listener, silence, 60)
    got: dict[Any, list[av.Packet]] = {}
    for tick in range(30):
        before = mixer.encodes
        out = mixer.mix_once()
        if tick >= 2:
            assert mixer.encodes - before == MIX_DEPTH + 1  # the mixed talkers' own + 1 shared
        for track, packets in out:
            got.setdefault(track, []).extend(packets)
    assert [m.mixed for m in talkers] == [True] * MIX_DEPTH + [False] * (len(freqs) - MIX_DEPTH)
    out = dict(mixer.mix_once())
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
        mixer.mix_once()
    assert not talkers[0].mixed and talkers[0].talk_ticks > 0  # still in its hangover, but quiet
    assert [m.mixed for m in talkers[1:]] == [True] * MIX_DEPTH + [False] * (len(freqs) - 1 - MIX_DEPTH)
