"""The Opus encoder of a mix, and the room's audio format (48 kHz mono, 20 ms frames)."""

from __future__ import annotations

import fractions

import av
import numpy as np

from media import opus

AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms
AUDIO_PTIME = AUDIO_SAMPLES / AUDIO_RATE
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class OpusMixEncoder:
    """libopus for a mix: mono, 40 kbit/s, 20 ms, packets stamped with the room's audio clock."""

    def __init__(self, bitrate: int = 40_000) -> None:
        # "audio" (CELT at this rate), complexity 5: a mix of several voices gains nothing from SILK's
        # one-talker speech model ("voip"), which costs more. libopus called directly (media.opus).
        self._encoder = opus.Encoder(bitrate=bitrate, complexity=5, application="audio")

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        packet = av.Packet(self._encoder.encode(samples))
        # every receiver's sender turns the room's clock into RTP timestamps, so a participant
        # moving between its own encoder and the listeners' shared one keeps a continuous timeline
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return [packet]
