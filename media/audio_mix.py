"""A room's audio: talker-gated mix-minus, on one thread every 20 ms.

Only talkers are mixed (a participant talks while its 20 ms mean level reaches ``talk_threshold``,
and for ``TALK_HANGOVER_TICKS`` after): open microphones would otherwise add up every room's
background noise. When more than ``mix_depth`` talk at once, only the loudest are mixed (a hardware
MCU's "mixing depth"), which bounds the room's cost whoever talks. A mixed talker hears the mix minus
themselves, encoded for them; everyone else hears the whole mix, encoded once, the same packets for
all of them.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from media.inbound import AudioIngest
from media.members import Member
from media.mix_encoder import AUDIO_PTIME, AUDIO_SAMPLES, OpusMixEncoder
from media.threads import name_os_thread, start_worker
from media.tracks import AudioOutTrack

log = logging.getLogger("backupplus.media.audio")

# Talk detection: mean |sample| of a participant's 20 ms (16-bit) at or above this = talking (Asterisk
# ConfBridge's default talking threshold), and still talking for 500 ms after.
TALK_THRESHOLD = 160.0
TALK_HANGOVER_TICKS = 25
MIX_DEPTH = 5  # at most this many talkers mixed at once: the loudest
LEVEL_SMOOTHING = 0.2  # the level that ranks talkers: exponential average over ~5 ticks (100 ms)
MIX_INCUMBENT_BONUS = 1.25  # a talker already mixed leaves the mix only for one 25% louder

Delivery = list[tuple[AudioOutTrack, list[av.Packet]]]


def _to_s16(mix: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(mix, -32768), 32767).astype(np.int16).reshape(1, -1)


def _deliver(out: Delivery) -> None:
    for track, packets in out:
        track.deliver(packets)


def take_20ms(member: Member) -> np.ndarray | None:
    """The member's next 20 ms of audio, once 40 ms are buffered (a head start against jitter)."""
    if not member.audio_primed:
        if member.audio_buffered < 2 * AUDIO_SAMPLES:
            return None
        member.audio_primed = True
    if member.audio_buffered < AUDIO_SAMPLES:
        member.audio_primed = False
        return None
    if len(member.audio_buf[0]) == AUDIO_SAMPLES:  # the usual case: one 20 ms Opus frame
        member.audio_buffered -= AUDIO_SAMPLES
        return member.audio_buf.popleft()
    out = np.empty(AUDIO_SAMPLES, dtype=np.int32)
    filled = 0
    while filled < AUDIO_SAMPLES:
        chunk = member.audio_buf[0]
        take = min(len(chunk), AUDIO_SAMPLES - filled)
        out[filled : filled + take] = chunk[:take]
        filled += take
        if take == len(chunk):
            member.audio_buf.popleft()
        else:
            member.audio_buf[0] = chunk[take:]
    member.audio_buffered -= AUDIO_SAMPLES
    return out


class AudioMixer:
    """The audio of a room's ``members`` (the room's own dict, read here)."""

    def __init__(
        self,
        members: dict[str, Member],
        *,
        name: str = "mcu-audio",
        talk_threshold: float = TALK_THRESHOLD,
        mix_depth: int = MIX_DEPTH,
    ) -> None:
        self.members = members
        self.name = name
        self.talk_threshold = talk_threshold
        self.mix_depth = max(1, mix_depth)
        self.encodes = 0  # Opus encodes so far (talkers' own + the listeners' shared one)
        self._inbox: queue.SimpleQueue[tuple[AudioIngest, Any, Any]] = queue.SimpleQueue()
        self._pts = 0  # the room's audio clock (samples): every encoder stamps its packets with it
        self._listener_encoder = OpusMixEncoder()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def feed_for(self, member: Member) -> Callable[[Any, Any], None]:
        """The ``deliver`` of a member's audio tap: its packets are decoded on the audio thread."""
        ingest, inbox = AudioIngest(member), self._inbox

        def deliver(codec: Any, encoded: Any) -> None:
            inbox.put((ingest, codec, encoded))

        return deliver

    def start(self) -> None:
        """Start the audio thread (once)."""
        if self._thread is None:
            self._thread = start_worker(self._work, self.name)

    def stop(self) -> threading.Thread | None:
        """Tell the audio thread to end; returns it for the caller to join."""
        self._stop.set()
        thread, self._thread = self._thread, None
        return thread

    def mix_once(self) -> Delivery:
        """Decode what arrived, mix 20 ms, encode what each member hears (the audio thread)."""
        while True:
            try:
                ingest, codec, encoded = self._inbox.get_nowait()
            except queue.Empty:
                break
            ingest(codec, encoded)
        pts = self._pts
        self._pts += AUDIO_SAMPLES
        members = tuple(self.members.values())  # the loop may add or remove members meanwhile
        talkers = self._talkers(members)
        for member in members:
            member.mixed = member.pid in talkers
        total = np.zeros(AUDIO_SAMPLES, dtype=np.int32)
        for chunk in talkers.values():
            total += chunk
        return self._encode(members, talkers, total, pts)

    def _talkers(self, members: tuple[Member, ...]) -> dict[str, np.ndarray]:
        """The members mixed this tick, with their 20 ms: those talking, at most ``mix_depth``."""
        talking: list[tuple[Member, np.ndarray]] = []
        for member in members:
            chunk = take_20ms(member) if not member.gone else None
            if chunk is None:
                member.talk_ticks = 0
                member.level = 0.0
                continue
            level = float(np.abs(chunk).mean())
            member.level += (level - member.level) * LEVEL_SMOOTHING
            if level >= self.talk_threshold:
                member.talk_ticks = TALK_HANGOVER_TICKS
            elif member.talk_ticks > 0:
                member.talk_ticks -= 1
            if member.talk_ticks > 0:
                talking.append((member, chunk))
        if len(talking) > self.mix_depth:
            # the loudest over the last ~100 ms; those already mixed keep their place unless clearly
            # passed, so that two voices of about the same level do not swap in and out every 20 ms
            talking.sort(key=lambda mc: mc[0].level * (MIX_INCUMBENT_BONUS if mc[0].mixed else 1.0), reverse=True)
            del talking[self.mix_depth :]
        return {member.pid: chunk for member, chunk in talking}

    def _encode(
        self, members: tuple[Member, ...], talkers: dict[str, np.ndarray], total: np.ndarray, pts: int
    ) -> Delivery:
        """Each talker's mix minus themselves with its own encoder; the whole mix once for the rest."""
        out: Delivery = []
        shared: list[av.Packet] | None = None
        for member in members:
            track = member.audio_out
            if track is None or member.gone:
                continue
            own = talkers.get(member.pid)
            if own is not None:
                packets = track.encode(_to_s16(total - own), pts)
                self.encodes += 1
            else:
                if shared is None:
                    shared = self._listener_encoder.encode(_to_s16(total), pts)
                    self.encodes += 1
                packets = shared
            if packets:
                out.append((track, packets))
        return out

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every 20 ms: mix and encode off the event loop, then hand all packets over in one call."""
        name_os_thread("mcu-audio")
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                out = self.mix_once()
            except Exception:  # pragma: no cover - a bad frame must not silence the room
                log.exception("audio mix of %s failed", self.name)
                out = []
            if out:
                try:
                    loop.call_soon_threadsafe(_deliver, out)
                except RuntimeError:  # the loop is closed: the node is gone
                    return
            next_t += AUDIO_PTIME
            delay = next_t - time.monotonic()
            if delay < -0.2:  # we were starved for a while: do not try to catch up
                next_t = time.monotonic()
                delay = 0.0
            if delay > 0:
                self._stop.wait(delay)
