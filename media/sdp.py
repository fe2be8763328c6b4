"""What the node reads from an offer and adds to its answer: the kinds offered, VP8 only for video,
a cap on what a browser may send us (we scale every picture down to its tile anyway), and the public
address of a node behind 1:1 NAT."""

from __future__ import annotations

import ipaddress
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


_HOST_CANDIDATE = re.compile(
    r"^a=candidate:(?P<foundation>\S+) (?P<component>\d+) (?P<proto>\S+) (?P<priority>\d+) "
    r"(?P<ip>[0-9.]+) (?P<port>\d+) typ host(?P<rest>.*)$"
)


def announce_public_ip(sdp: str, public_ip: str) -> str:
    """1:1 NAT (cloud machines): each IPv4 host candidate is announced at ``public_ip`` (same port,
    same priority: what clients on the internet use) and kept at its own address one priority step
    lower (what a TURN server or a client on the same network uses: no NAT hairpin needed); the
    c= lines carry the public address."""
    public = ipaddress.ip_address(public_ip)
    out: list[str] = []
    for line in sdp.split("\r\n"):
        found = _HOST_CANDIDATE.match(line)
        if found and found["ip"] != public_ip:
            out.append(f"a=candidate:{found['foundation']}p {found['component']} {found['proto']} "
                       f"{found['priority']} {public_ip} {found['port']} typ host{found['rest']}")
            lower = max(0, int(found["priority"]) - 1)
            out.append(f"a=candidate:{found['foundation']} {found['component']} {found['proto']} "
                       f"{lower} {found['ip']} {found['port']} typ host{found['rest']}")
            continue
        if line.startswith("c=IN IP4 ") and public.version == 4:
            line = f"c=IN IP4 {public_ip}"
        out.append(line)
    return "\r\n".join(out)


def without_end_of_candidates(sdp: str) -> str:
    """The offer without ``a=end-of-candidates``. Told that the remote candidates are complete, aioice
    drops a component none of whose candidates it could use, and then gathers no candidate of its own
    for it: an answer without candidates. That is what a browser whose host candidates are mDNS names
    this node cannot resolve (Firefox) gets once its offer waits for complete gathering (as the join
    page does with TURN servers). Without the marker the node answers with its candidates and learns
    the browser's address from its connectivity checks (peer-reflexive)."""
    return re.sub(r"^a=end-of-candidates[ \t]*(\r?\n|$)", "", sdp, flags=re.MULTILINE)
