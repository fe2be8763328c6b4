"""media.srtp: libsrtp through ctypes.PyDLL gives byte for byte what pylibsrtp's cffi path gives,
with the same errors. Real libsrtp, real keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from media import aiortc_compat, srtp

pytestmark = pytest.mark.media
T = TypeVar("T")

KEY = os.urandom(30)
RTP = bytes.fromhex("80600001000000010000beef") + os.urandom(900)
RTCP = bytes.fromhex("80c80006") + bytes.fromhex("0000beef") + os.urandom(20)


def sessions() -> tuple[Session, Session]:
    tx = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return tx, rx


def with_original(fn: Callable[[], T]) -> T:
    """Run fn with pylibsrtp's own (GIL-releasing) method in place, then put back what was there."""
    current = aiortc_compat.srtp_process()
    aiortc_compat.set_srtp_process(srtp.ORIGINAL_PROCESS)
    try:
        return fn()
    finally:
        aiortc_compat.set_srtp_process(current)


def test_same_bytes_as_pylibsrtp() -> None:
    def run() -> list[bytes]:
        tx, rx = sessions()
        out = [tx.protect(RTP), tx.protect_rtcp(RTCP)]
        out += [rx.unprotect(out[0]), rx.unprotect_rtcp(out[1])]
        return out

    reference = with_original(run)
    srtp.install()
    assert srtp.install() is False  # idempotent
    assert aiortc_compat.srtp_process() is not srtp.ORIGINAL_PROCESS
    assert run() == reference
    assert reference[2] == RTP and reference[3] == RTCP


def test_same_errors() -> None:
    srtp.install()
    tx, rx = sessions()
    protected = tx.protect(RTP)
    assert rx.unprotect(protected) == RTP
    with pytest.raises(pylibsrtp.Error, match="replay"):
        rx.unprotect(protected)  # the replay window is libsrtp's, as before
    tampered = bytearray(tx.protect(RTP[:2] + b"\x00\x02" + RTP[4:]))
    tampered[20] ^= 1
    with pytest.raises(pylibsrtp.Error, match="auth"):
        rx.unprotect(bytes(tampered))
    with pytest.raises(ValueError, match="too long"):
        tx.protect(b"\x80" * 1500)
    with pytest.raises(TypeError):
        tx.protect(bytearray(RTP))  # type: ignore[arg-type]


def test_installed_by_the_composition_root_not_by_the_node() -> None:
    """A fresh process: making a MediaNode leaves pylibsrtp as it is; wiring an in-process node into the
    broker's app (``backupplus serve``) installs the patch."""
    script = """
from aiohttp import web
from infra.settings import Settings
from media import aiortc_compat, srtp
from media.node import MediaNode
MediaNode(Settings(), url="http://127.0.0.1:9")
assert aiortc_compat.srtp_process() is srtp.ORIGINAL_PROCESS, "the node patched the process"
from backupplus.media_plane import attach_media
attach_media(web.Application(), in_process_node=False)
assert aiortc_compat.srtp_process() is srtp.ORIGINAL_PROCESS, "no node, no patch"
attach_media(web.Application(), in_process_node=True)
assert aiortc_compat.srtp_process() is not srtp.ORIGINAL_PROCESS, "serve did not install it"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
