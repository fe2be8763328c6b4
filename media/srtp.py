"""SRTP without dropping the GIL around every packet.

pylibsrtp calls libsrtp through cffi, which releases the GIL around each ~5 µs call, thousands of
times a second on the node's event loop; every release lets a decoder, mixer or compositor thread
take the GIL, and the loop waits to get it back. :func:`install` makes the same libsrtp calls through
``ctypes.PyDLL``, which keeps the GIL: same library, same session, same buffers, same checks and
errors. Process-wide and idempotent: installed once by the composition root (``backupplus serve``,
``backupplus media``), not by the node. Figures: docs/MEDIA.md.
"""

from __future__ import annotations

import ctypes
from typing import Any

from media import aiortc_compat

_FUNCS = ("srtp_protect", "srtp_protect_rtcp", "srtp_unprotect", "srtp_unprotect_rtcp")
_installed = False
# pylibsrtp's own method, kept for the tests that compare both paths
ORIGINAL_PROCESS = aiortc_compat.srtp_process()


def _library() -> dict[str, Any]:
    # the .so pylibsrtp already loaded: the same libsrtp state
    lib = ctypes.PyDLL(aiortc_compat.srtp_library_path())
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
    aiortc_compat.set_srtp_process(aiortc_compat.srtp_process_calling(_library()))
    _installed = True
    return True
