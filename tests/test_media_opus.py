"""media.opus: libopus called directly. Round trips through both our decoder and FFmpeg's, errors."""

from __future__ import annotations

import av
import numpy as np
import pytest

from media import opus

pytestmark = pytest.mark.media


def tone(freq: float, seconds: float, amplitude: int = 6000) -> np.ndarray:
    t = np.arange(int(48000 * seconds)) / 48000
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    return float(np.argmax(spectrum) * 48000 / len(samples))


def test_round_trip_keeps_pitch_and_level() -> None:
    encoder, decoder = opus.Encoder(bitrate=40_000), opus.Decoder()
    pcm = tone(600, 1.0)
    packets = [encoder.encode(pcm[i : i + 960]) for i in range(0, len(pcm), 960)]
    assert all(0 < len(p) <= 400 for p in packets)  # ~40 kbit/s: ~100 bytes per 20 ms
    out = np.concatenate([decoder.decode(p) for p in packets])
    assert out.dtype == np.int16 and len(out) == len(pcm)
    tail = out[9600:]
    assert abs(peak_hz(tail) - 600) < 5
    assert 3500 < np.sqrt(np.mean(tail.astype(float) ** 2)) < 5000  # 6000 peak: 4243 rms

    ffmpeg = av.CodecContext.create("libopus", "r")  # any Opus decoder plays our packets
    ffmpeg.format, ffmpeg.layout, ffmpeg.sample_rate = "s16", "mono", 48000
    other = np.concatenate([f.to_ndarray().ravel() for p in packets for f in ffmpeg.decode(av.Packet(p))])
    assert abs(peak_hz(other[9600:]) - 600) < 5


def test_stereo_stream_is_downmixed() -> None:
    stereo: av.CodecContext = av.CodecContext.create("libopus", "w")
    stereo.bit_rate, stereo.format, stereo.layout, stereo.sample_rate = 64_000, "s16", "stereo", 48000
    pcm = tone(800, 0.5)
    decoder = opus.Decoder()
    out = []
    for i in range(0, len(pcm), 960):
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm[i : i + 960], 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i
        for packet in stereo.encode(frame):
            out.append(decoder.decode(bytes(packet)))
    samples = np.concatenate(out)
    assert abs(peak_hz(samples[4800:]) - 800) < 5


def test_errors() -> None:
    encoder, decoder = opus.Encoder(), opus.Decoder()
    with pytest.raises(ValueError, match="960"):
        encoder.encode(np.zeros(480, dtype=np.int16))
    with pytest.raises(opus.OpusError):
        decoder.decode(b"\xff\xff\xff")
    encoder.close()
    decoder.close()
    encoder.close()  # twice is fine
    with pytest.raises(opus.OpusError, match="closed"):
        encoder.encode(np.zeros(960, dtype=np.int16))
    with pytest.raises(opus.OpusError, match="closed"):
        decoder.decode(b"\x00")
