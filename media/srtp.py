"""SRTP without dropping the GIL around every packet.

pylibsrtp calls libsrtp through cffi, which releases the GIL around each call. An SRTP operation
takes ~5 µs, and the node makes ~4,000 of them a second on its event loop. Every release hands the
GIL (and, on a busy CPU, the CPU) to whichever decoder, mixer or compositor thread is waiting, and
the event loop waits to get it back: in the node's profile ``srtp_unprotect`` took 243 µs of the
loop's wall time per call, for 5 µs of work.

:func:`install` replaces the private ``__process`` of ``pylibsrtp.Session`` with the same libsrtp
call made through ``ctypes.PyDLL``, which keeps the GIL: same library, same session, same buffers,
same checks and errors; the other threads still get the GIL every switch interval. Installed by the
media node; process-wide and idempotent. Measured with `benchmarks/media_outage.py --srtp-gil
release|hold`, interleaved, node pinned to one CPU: 15.1-15.3 -> 18.2 composed frames/s, 65 -> 54
CPU-ms per composed frame.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pylibsrtp
from pylibsrtp import _binding

_FUNCS = ("srtp_protect", "srtp_protect_rtcp", "srtp_unprotect", "srtp_unprotect_rtcp")
_installed = False
# pylibsrtp's own method, kept for the tests that compare both paths
ORIGINAL_PROCESS = pylibsrtp.Session._Session__process  # type: ignore[attr-defined]


def _library() -> dict[str, Any]:
    lib = ctypes.PyDLL(_binding.__file__)  # the .so pylibsrtp already loaded: same libsrtp state
    funcs = {}
    for name in _FUNCS:
        func = getattr(lib, name)
        func.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
        func.restype = ctypes.c_int
        funcs[name] = func
    return funcs


def install() -> bool:
    """Route pylibsrtp's four per-packet calls through GIL-holding ctypes calls. True if installed
    now, False if it already was."""
    global _installed
    if _installed:
        return False
    funcs = _library()
    ffi, lib, check = _binding.ffi, _binding.lib, pylibsrtp._srtp_assert
    by_cffi = {getattr(lib, name): funcs[name] for name in _FUNCS}

    def process(self: Any, data: bytes, func: Any, trailer: int = 0) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError("packet must be bytes")
        if len(data) > len(self._cdata) - trailer:
            raise ValueError("packet is too long")
        pointers = self.__dict__.get("_bp_pointers")
        if pointers is None:  # the session and its buffer never move: convert the addresses once
            pointers = (int(ffi.cast("uintptr_t", self._srtp[0])), int(ffi.cast("uintptr_t", self._cdata)))
            self.__dict__["_bp_pointers"] = pointers
        length = ctypes.c_int(len(data))
        self._buffer[0 : len(data)] = data
        check(by_cffi[func](pointers[0], pointers[1], ctypes.byref(length)))
        return self._buffer[0 : length.value]  # type: ignore[no-any-return]

    pylibsrtp.Session._Session__process = process  # type: ignore[attr-defined]
    _installed = True
    return True
