"""What the node reads from an offer and adds to its answer: the kinds offered, VP8 only for video,
and a cap on what a browser may send us (we scale every picture down to its tile anyway)."""

from __future__ import annotations

import re
from typing import Any

from aiortc import RTCRtpSender

INBOUND_VIDEO_KBPS = 1000  # b=AS in the answer: what a browser may send us


def vp8_preferences() -> list[Any]:
    caps = RTCRtpSender.getCapabilities("video").codecs
    vp8 = [c for c in caps if c.mimeType.lower() == "video/vp8"]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return vp8 + rtx


def offered_kinds(sdp: str) -> list[str]:
    return re.findall(r"^m=(audio|video|application)\b", sdp, flags=re.MULTILINE)


def cap_video_bandwidth(sdp: str, kbps: int) -> str:
    """Add b=AS / b=TIAS to every video m-section of an SDP (after its c= line, as RFC 4566 orders)."""
    out: list[str] = []
    in_video = False
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        elif line.startswith("b=") and in_video:
            continue  # ours replace any
        out.append(line)
        if in_video and line.startswith("c="):
            out.append(f"b=AS:{kbps}")
            out.append(f"b=TIAS:{kbps * 1000}")
    return "\r\n".join(out)
