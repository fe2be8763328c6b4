"""Every use of aiortc's and pylibsrtp's private names, each behind a small named function.

The media node reaches past aiortc's API in a few places (a receiver's decoder queue, a sender's RTP
task, counters, keyframe and RTCP paths, the VP8 packetiser, the DTLS transport's send) and past
pylibsrtp's (a session's per-packet call). None of that is API: ``REQUIRED`` lists every name used
with the shape relied on, ``tests/test_media_aiortc_compat.py`` checks the list against the installed
versions, and ``pyproject.toml`` pins aiortc and pylibsrtp to the minor versions tested.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import clock, rtp
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.utils import uint16_add


@dataclass(frozen=True)
class Required:
    """One private name relied on: where it lives, what it must be, and (callables) its parameters."""

    owner: str  # dotted path of the class or module that holds it
    name: str  # as looked up, name mangling spelled out
    shape: str  # "attribute" (of an instance), "method", "coroutine", "classmethod", "function", "module"
    params: tuple[str, ...] = ()  # callables: parameter names after self/cls
    types: tuple[type, ...] = ()  # attributes: isinstance of one of these on a fresh instance (empty: any)


REQUIRED: list[Required] = []
# process-wide replacements made through this module: (owner, name) -> the library's own
ORIGINALS: dict[tuple[str, str], Any] = {}

SENDER = "aiortc.rtcrtpsender.RTCRtpSender"
RECEIVER = "aiortc.rtcrtpreceiver.RTCRtpReceiver"
DTLS = "aiortc.rtcdtlstransport.RTCDtlsTransport"
VP8 = "aiortc.codecs.vpx.Vp8Encoder"
SRTP_SESSION = "pylibsrtp.Session"
ICE_TRANSPORT = "aiortc.rtcicetransport.RTCIceTransport"
ICE_CONNECTION = "aioice.ice.Connection"


def _needs(
    owner: str, name: str, shape: str, params: tuple[str, ...] = (), types: tuple[type, ...] = ()
) -> str:
    REQUIRED.append(Required(owner, name, shape, params, types))
    return name


_NONE = type(None)

# RTCRtpReceiver: the decoder queue the tap replaces, the thread that shows it is too late, the flag
# that makes the receiver send a PLI, and the RTCP send the REMB throttle wraps.
DECODER_QUEUE = _needs(RECEIVER, "_RTCRtpReceiver__decoder_queue", "attribute")
DECODER_THREAD = _needs(RECEIVER, "_RTCRtpReceiver__decoder_thread", "attribute", types=(_NONE, threading.Thread))
DECODE_ERROR = _needs(RECEIVER, "_RTCRtpReceiver__decoder_error", "attribute", types=(threading.Event,))
_R_SEND_RTCP = _needs(RECEIVER, "_send_rtcp", "coroutine", ("packet",))

# RTCRtpSender: its RTP task and NACK answer (replaced by media.outbound), what they read and keep up
# to date for the RTCP sender reports, and the keyframe / RTCP / frame paths the node hooks.
_S_RUN_RTP = _needs(SENDER, "_run_rtp", "coroutine", ("codec",))
_S_RETRANSMIT = _needs(SENDER, "_retransmit", "coroutine", ("sequence_number",))
_S_SEND_KEYFRAME = _needs(SENDER, "_send_keyframe", "method")
_S_HANDLE_RTCP = _needs(SENDER, "_handle_rtcp_packet", "coroutine", ("packet",))
_S_NEXT_FRAME = _needs(SENDER, "_next_encoded_frame", "coroutine", ("codec",))
_S_SSRC = _needs(SENDER, "_ssrc", "attribute", types=(int,))
_S_RTX_SSRC = _needs(SENDER, "_rtx_ssrc", "attribute", types=(int,))
_S_EXTENSIONS = _needs(
    SENDER, "_RTCRtpSender__rtp_header_extensions_map", "attribute", types=(rtp.HeaderExtensionsMap,)
)
_S_MID = _needs(SENDER, "_RTCRtpSender__mid", "attribute", types=(_NONE, str))
_S_STARTED = _needs(SENDER, "_RTCRtpSender__rtp_started", "attribute", types=(asyncio.Event,))
_S_EXITED = _needs(SENDER, "_RTCRtpSender__rtp_exited", "attribute", types=(asyncio.Event,))
_S_TRACK = _needs(SENDER, "_RTCRtpSender__track", "attribute")
_S_NTP = _needs(SENDER, "_RTCRtpSender__ntp_timestamp", "attribute", types=(int,))
_S_RTP_TS = _needs(SENDER, "_RTCRtpSender__rtp_timestamp", "attribute", types=(int,))
_S_OCTETS = _needs(SENDER, "_RTCRtpSender__octet_count", "attribute", types=(int,))
_S_PACKETS = _needs(SENDER, "_RTCRtpSender__packet_count", "attribute", types=(int,))
_S_RTX_PT = _needs(SENDER, "_RTCRtpSender__rtx_payload_type", "attribute", types=(_NONE, int))
_S_RTX_SEQ = _needs(SENDER, "_RTCRtpSender__rtx_sequence_number", "attribute", types=(int,))

_D_SEND_RTP = _needs(DTLS, "_send_rtp", "coroutine", ("data",))
_V_PACKETIZE = _needs(VP8, "_packetize", "classmethod", ("buffer", "picture_id"))

# ICE: a gatherer's aioice connection, and the one call every remote candidate goes through once its
# address is known (SDP, trickled, mDNS resolved): media.candidates filters there.
ICE_GATHERER = "aiortc.rtcicetransport.RTCIceGatherer"
ICE_CONNECTION = "aioice.ice.Connection"
_I_CONNECTION = _needs(ICE_GATHERER, "_connection", "attribute")
_I_ADD_REMOTE = _needs(ICE_CONNECTION, "_add_remote_candidate", "method", ("remote_candidate", "network_host"))

# pylibsrtp: the session's per-packet call (replaced by media.srtp), what it reads, and the cffi
# binding the replacement loads again through ctypes.
_P_PROCESS = _needs(SRTP_SESSION, "_Session__process", "method", ("data", "func", "trailer"))
_P_CDATA = _needs(SRTP_SESSION, "_cdata", "attribute")
_P_BUFFER = _needs(SRTP_SESSION, "_buffer", "attribute")
_P_SRTP = _needs(SRTP_SESSION, "_srtp", "attribute")
_P_ASSERT = _needs("pylibsrtp", "_srtp_assert", "function", ("rc",))
_P_BINDING = _needs("pylibsrtp", "_binding", "module")


# RTCIceTransport: its aioice connection, whose nominated candidate pairs tell how media flows
# (direct, or through a TURN relay on either side).
_I_CONNECTION = _needs(ICE_TRANSPORT, "_connection", "attribute")
_C_NOMINATED = _needs(ICE_CONNECTION, "_nominated", "attribute", types=(dict,))


@dataclass(frozen=True)
class Hook:
    """A method replaced on one instance; ``remove`` puts the class's own back."""

    obj: Any
    name: str

    def remove(self) -> None:
        self.obj.__dict__.pop(self.name, None)


def _hook(obj: Any, name: str, replacement: Any) -> Hook:
    setattr(obj, name, replacement)
    return Hook(obj, name)


# --- receivers -------------------------------------------------------------------------------------
def decoder_started(receiver: Any) -> bool:
    """Whether the receiver's own decoder thread already runs (on its own queue)."""
    return getattr(receiver, DECODER_THREAD, None) is not None


def replace_decoder_queue(receiver: Any, queue_like: Any) -> None:
    """What the receiver hands its reassembled frames to (``put``) and its decoder thread waits on."""
    setattr(receiver, DECODER_QUEUE, queue_like)


def decoder_queue(receiver: Any) -> Any:
    return getattr(receiver, DECODER_QUEUE)


def decode_error_flag(receiver: Any) -> threading.Event | None:
    """The flag aiortc's decoder sets on a bad frame: the receiver sends a PLI with its next packet."""
    return getattr(receiver, DECODE_ERROR, None)


def receiver_send_rtcp(receiver: Any) -> Callable[[Any], Awaitable[None]]:
    """How the receiver sends each RTCP packet (NACK, PLI, REMB, receiver reports)."""
    return getattr(receiver, _R_SEND_RTCP)  # type: ignore[no-any-return]


def replace_receiver_send_rtcp(receiver: Any, send: Callable[[Any], Awaitable[None]]) -> Hook:
    return _hook(receiver, _R_SEND_RTCP, send)


# --- ICE -------------------------------------------------------------------------------------------
def ice_connection(ice_transport: Any) -> Any:
    """The aioice ``Connection`` under an ``RTCIceTransport``."""
    return getattr(ice_transport.iceGatherer, _I_CONNECTION)


def filter_remote_candidates(connection: Any, admit: Callable[[Any, str], bool]) -> Hook:
    """Remote candidates reach ``connection`` only when ``admit(candidate, address)`` is true."""
    original = getattr(connection, _I_ADD_REMOTE)

    def add_remote_candidate(remote_candidate: Any, network_host: str) -> None:
        if admit(remote_candidate, network_host):
            original(remote_candidate, network_host)

    return _hook(connection, _I_ADD_REMOTE, add_remote_candidate)


# --- senders ---------------------------------------------------------------------------------------
def sender_ssrc(sender: Any) -> int:
    return getattr(sender, _S_SSRC)  # type: ignore[no-any-return]


def sender_rtx_ssrc(sender: Any) -> int:
    return getattr(sender, _S_RTX_SSRC)  # type: ignore[no-any-return]


def header_extensions_map(sender: Any) -> Any:
    return getattr(sender, _S_EXTENSIONS)


def sender_mid(sender: Any) -> str | None:
    return getattr(sender, _S_MID)  # type: ignore[no-any-return]


def record_sent(sender: Any, rtp_timestamp: int, octets: int, packets: int) -> None:
    """Keep what the sender's RTCP sender reports read up to date after sending packets ourselves."""
    setattr(sender, _S_NTP, clock.current_ntp_time())
    setattr(sender, _S_RTP_TS, rtp_timestamp)
    setattr(sender, _S_OCTETS, getattr(sender, _S_OCTETS) + octets)
    setattr(sender, _S_PACKETS, getattr(sender, _S_PACKETS) + packets)


def take_rtx_sequence_number(sender: Any) -> tuple[int, int] | None:
    """(RTX payload type, next RTX sequence number), advancing it; ``None`` without RTX."""
    payload_type = getattr(sender, _S_RTX_PT)
    if payload_type is None:
        return None
    sequence_number: int = getattr(sender, _S_RTX_SEQ)
    setattr(sender, _S_RTX_SEQ, uint16_add(sequence_number, 1))
    return payload_type, sequence_number


def transport_send_rtp(transport: Any) -> Callable[[bytes], Coroutine[Any, Any, None]]:
    """The DTLS transport's send of one (not yet protected) RTP packet: SRTP-protects and sends it."""
    return getattr(transport, _D_SEND_RTP)  # type: ignore[no-any-return]


def replace_run_rtp(sender: Any, run: Callable[[Any], Coroutine[Any, Any, None]]) -> Hook:
    """The task ``RTCRtpSender.send`` starts (``run(codec)``), cancelled by ``stop``."""
    return _hook(sender, _S_RUN_RTP, run)


def replace_retransmit(sender: Any, retransmit: Callable[[int], Coroutine[Any, Any, None]]) -> Hook:
    """How the sender answers a NACK for one sequence number."""
    return _hook(sender, _S_RETRANSMIT, retransmit)


def retransmit_hook(sender: Any) -> Hook:
    """The hook ``replace_retransmit`` makes on ``sender``, known before it is made."""
    return Hook(sender, _S_RETRANSMIT)


def mark_rtp_started(sender: Any) -> None:
    getattr(sender, _S_STARTED).set()


def end_rtp(sender: Any) -> None:
    """What aiortc's RTP task does when it ends: stop and drop the track, say the task exited."""
    track = getattr(sender, _S_TRACK)
    if track is not None:
        track.stop()
        setattr(sender, _S_TRACK, None)
    getattr(sender, _S_EXITED).set()


def replace_send_keyframe(sender: Any, request: Callable[[], None]) -> Hook:
    """Called on each PLI/FIR the sender receives."""
    return _hook(sender, _S_SEND_KEYFRAME, request)


def observe_rtcp(sender: Any, observe: Callable[[Any], None]) -> Hook:
    """``observe(packet)`` sees every RTCP packet the sender receives, before the sender handles it."""
    handle = getattr(sender, _S_HANDLE_RTCP)

    async def handle_rtcp(packet: Any) -> None:
        observe(packet)
        await handle(packet)

    return _hook(sender, _S_HANDLE_RTCP, handle_rtcp)


async def handle_rtcp(sender: Any, packet: Any) -> None:
    """Hand the sender one RTCP packet as its transport does."""
    await getattr(sender, _S_HANDLE_RTCP)(packet)


def after_each_encoded_frame(sender: Any, sent: Callable[[], None]) -> Hook:
    """``sent()`` after each frame the sender's own task takes from its track and sends."""
    next_frame = getattr(sender, _S_NEXT_FRAME)

    async def next_encoded(codec: Any) -> Any:
        encoded = await next_frame(codec)
        if encoded is not None:
            sent()
        return encoded

    return _hook(sender, _S_NEXT_FRAME, next_encoded)


def vp8_packetize(frame: bytes, picture_id: int) -> list[bytes]:
    """One encoded VP8 frame as RTP payloads, with aiortc's packetiser."""
    return getattr(Vp8Encoder, _V_PACKETIZE)(frame, picture_id)  # type: ignore[no-any-return]


# --- ICE -----------------------------------------------------------------------------------------------
def selected_candidate_types(ice_transport: Any) -> tuple[str, str] | None:
    """(local, remote) candidate types of the ICE transport's nominated pair (``host``, ``srflx``,
    ``prflx``, ``relay``); None while none is nominated."""
    connection = getattr(ice_transport, _I_CONNECTION, None)
    nominated = getattr(connection, _C_NOMINATED, None) if connection is not None else None
    if not nominated:
        return None
    pair = next(iter(nominated.values()))
    return str(pair.local_candidate.type), str(pair.remote_candidate.type)


# --- pylibsrtp -------------------------------------------------------------------------------------
def srtp_process() -> Callable[..., bytes]:
    """``pylibsrtp.Session``'s per-packet call as it is now: ``process(self, data, func, trailer=0)``."""
    return getattr(pylibsrtp.Session, _P_PROCESS)  # type: ignore[no-any-return]


def set_srtp_process(process: Callable[..., bytes]) -> None:
    """Replace that call for every session of the process."""
    ORIGINALS.setdefault((SRTP_SESSION, _P_PROCESS), srtp_process())
    setattr(pylibsrtp.Session, _P_PROCESS, process)


def srtp_library_path() -> str:
    """The shared object pylibsrtp loaded (its cffi binding, libsrtp linked in)."""
    return getattr(pylibsrtp, _P_BINDING).__file__  # type: ignore[no-any-return]


def srtp_process_calling(funcs: dict[str, Any]) -> Callable[..., bytes]:
    """A ``process`` that makes the session's libsrtp call through ``funcs`` (name -> ctypes function of
    the same library, taking the session, the buffer and a length pointer) instead of cffi: same
    session, same buffer, same checks and errors."""
    binding = getattr(pylibsrtp, _P_BINDING)
    ffi, lib, check = binding.ffi, binding.lib, getattr(pylibsrtp, _P_ASSERT)
    by_cffi = {getattr(lib, name): func for name, func in funcs.items()}

    # _cdata, _buffer and _srtp (listed above) read as plain attributes: this runs for every packet
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

    return process
