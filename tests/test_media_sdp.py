"""media.sdp: the kinds an offer carries, VP8 (+rtx) preferred, and the answer's cap on inbound video."""

from __future__ import annotations

import pytest

from media.sdp import cap_video_bandwidth, offered_kinds, vp8_preferences

pytestmark = pytest.mark.media

OFFER_LINES = [
    "v=0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "b=AS:64",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
    "c=IN IP4 0.0.0.0",
    "b=AS:2500",
    "a=mid:1",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "",
]
SDP = "\r\n".join(OFFER_LINES)


def test_offered_kinds_in_order() -> None:
    assert offered_kinds(SDP) == ["audio", "video", "application"]


def test_video_gets_our_bandwidth_lines_after_its_c_line_and_audio_keeps_its_own() -> None:
    lines = cap_video_bandwidth(SDP, 1000).split("\r\n")
    video = lines.index("m=video 9 UDP/TLS/RTP/SAVPF 96 97")
    assert lines[video + 1 : video + 5] == ["c=IN IP4 0.0.0.0", "b=AS:1000", "b=TIAS:1000000", "a=mid:1"]
    assert "b=AS:2500" not in lines and "b=AS:64" in lines  # the offer's video cap replaced, audio's kept


def test_vp8_and_its_rtx_only() -> None:
    assert {c.mimeType.lower() for c in vp8_preferences()} == {"video/vp8", "video/rtx"}
