"""libopus called directly (ctypes.PyDLL), for the room's audio thread.

The audio thread makes two short calls per participant every 20 ms. Through PyAV each is wrapped in
Packet/Frame objects and made with the GIL released, so each one hands the GIL to the event loop and
then waits up to a switch interval to get it back. Here the same libopus (the copy PyAV ships, or the
system's) is called with the GIL held and plain buffers: the loop waits at most one short call at a
time. Figures: docs/MEDIA.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from typing import Any

import av
import numpy as np

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
MAX_FRAME_SAMPLES = 5760  # 120 ms, the longest Opus frame
MAX_PACKET = 1500

APPLICATION = {"voip": 2048, "audio": 2049, "restricted_lowdelay": 2051}
_SET_BITRATE, _SET_COMPLEXITY = 4002, 4010


class OpusError(RuntimeError):
    """libopus returned an error code."""


def _find_library() -> str:
    bundled = glob.glob(os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs", "libopus*.so*"))
    if bundled:
        return bundled[0]
    system = ctypes.util.find_library("opus")
    if system is None:  # pragma: no cover - PyAV's wheels ship libopus
        raise OSError("libopus not found")
    return system


_P, _I, _I32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int32
# the libopus calls used here: name -> (return type, argument types), from opus.h
_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "opus_encoder_create": (_P, (_I32, _I, _I, ctypes.POINTER(_I))),
    "opus_encode": (_I32, (_P, _P, _I, _P, _I32)),  # state, pcm, frame size, out, max bytes
    "opus_encoder_destroy": (None, (_P,)),
    "opus_decoder_create": (_P, (_I32, _I, ctypes.POINTER(_I))),
    "opus_decode": (_I, (_P, ctypes.c_char_p, _I32, _P, _I, _I)),  # state, data, len, pcm, max, fec
    "opus_decoder_destroy": (None, (_P,)),
    "opus_strerror": (ctypes.c_char_p, (_I,)),
}


def _load() -> Any:
    lib = ctypes.PyDLL(_find_library())  # PyDLL: the calls keep the GIL
    for name, (restype, argtypes) in _SIGNATURES.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    lib.opus_encoder_ctl.restype = _I  # variadic: arguments passed as ctypes values
    return lib


_lib = _load()


def _check(code: int) -> int:
    if code < 0:
        raise OpusError(_lib.opus_strerror(code).decode())
    return code


class _Coder:
    """Owns one libopus state; ``close()`` (or garbage collection) frees it once."""

    _state: int | None = None
    _destroy: Any = None

    def _live_state(self) -> int:
        if self._state is None:
            raise OpusError(f"{type(self).__name__.lower()} closed")
        return self._state

    def close(self) -> None:
        if self._state is not None:
            self._destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


class Encoder(_Coder):
    """A mono 48 kHz Opus encoder: ``encode(samples)`` takes 960 int16 samples, returns one packet."""

    _destroy = _lib.opus_encoder_destroy

    def __init__(self, bitrate: int = 40_000, complexity: int = 5, application: str = "audio") -> None:
        err = ctypes.c_int(0)
        state = _lib.opus_encoder_create(SAMPLE_RATE, 1, APPLICATION[application], ctypes.byref(err))
        _check(err.value)
        self._state = state
        _check(_lib.opus_encoder_ctl(ctypes.c_void_p(state), _SET_BITRATE, ctypes.c_int32(bitrate)))
        _check(_lib.opus_encoder_ctl(ctypes.c_void_p(state), _SET_COMPLEXITY, ctypes.c_int32(complexity)))
        self._out = ctypes.create_string_buffer(MAX_PACKET)

    def encode(self, samples: np.ndarray) -> bytes:
        state = self._live_state()
        pcm = np.ascontiguousarray(samples, dtype=np.int16).ravel()
        if len(pcm) != FRAME_SAMPLES:
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {len(pcm)}")
        n = _check(_lib.opus_encode(state, pcm.ctypes.data, FRAME_SAMPLES, self._out, MAX_PACKET))
        return self._out.raw[:n]


class Decoder(_Coder):
    """A mono 48 kHz Opus decoder (a stereo stream is downmixed by libopus)."""

    _destroy = _lib.opus_decoder_destroy

    def __init__(self) -> None:
        err = ctypes.c_int(0)
        state = _lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(err))
        _check(err.value)
        self._state = state
        self._pcm = np.empty(MAX_FRAME_SAMPLES, dtype=np.int16)

    def decode(self, data: bytes) -> np.ndarray:
        """The packet's samples (int16, a copy)."""
        state = self._live_state()
        n = _check(_lib.opus_decode(state, data, len(data), self._pcm.ctypes.data, MAX_FRAME_SAMPLES, 0))
        return self._pcm[:n].copy()
