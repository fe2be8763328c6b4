"""A strict check of a participant's SDP offer, before any SDP parser sees it (pure Python, no aiortc).

Browsers send a small, regular offer: one audio and at most one video section over
``UDP/TLS/RTP/SAVPF``, ICE credentials, a SHA-256 DTLS fingerprint, ``a=setup``, a few dozen codecs and
candidates. Anything else (junk, truncation, hundreds of sections or candidates, huge attributes,
lines aiortc's parser would crash on) is refused here with a stable ``reason``, so a malformed offer
costs neither a peer connection nor an exception deep in aiortc. It lives in ``infra`` because both
the API (before the broker forwards an offer) and the media node (which checks again) import it.
docs/MEDIA.md lists what is checked and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_BYTES = 32 * 1024  # a browser's gathered audio+video offer is 4-10 KB
MAX_LINE = 1024  # the longest real lines (sha-512 fingerprints, ssrc lines) are ~220 characters
MAX_LINES = 1000
MAX_ATTRIBUTES = 250  # per section: a recent Chrome's video section has ~130 (every codec, rtx, fec)
MAX_CANDIDATES = 64  # per section: Firefox offers RTCP (component 2) candidates too, per interface
MAX_FORMATS = 64  # payload types on one m= line
KINDS = ("audio", "video")
TRANSPORT = "UDP/TLS/RTP/SAVPF"
SETUP_VALUES = ("actpass", "active", "passive")
# RFC 8122 hash names and their digest sizes; aiortc checks every one it supports, we require sha-256
HASH_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
# What the node can receive: an audio section needs one of these, a video section VP8 (the only
# codec it decodes; every WebRTC browser offers it). Static types 0 (PCMU) and 8 (PCMA) need no rtpmap.
AUDIO_CODECS = {"opus/48000", "pcmu/8000", "pcma/8000"}
VIDEO_CODECS = {"vp8/90000"}
LINE_TYPES = set("vosiuepcbtrzkam")
# fmtp parameters an SDP parser reads as integers (aiortc's list)
FMTP_INT_PARAMETERS = {"apt", "max-fr", "max-fs", "maxplaybackrate", "minptime", "stereo", "useinbandfec"}

_PRINTABLE = re.compile(r"[^\x20-\x7e\r\n]")  # no tab either: parsers split on it, we do not
_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_FINGERPRINT = re.compile(r"^([0-9A-Fa-f]{2})(:[0-9A-Fa-f]{2})*$")
_M_LINE = re.compile(r"^m=([a-z]+) ([0-9]{1,5}) (\S+) (\S.*)$")
_CONNECTION = re.compile(r"^IN IP[46] [0-9A-Za-z.:%-]{1,253}$")
_HOST = re.compile(r"^[0-9A-Za-z.:%-]{1,253}$")
_CANDIDATE_TYPES = {"host", "srflx", "prflx", "relay"}


class InvalidSdp(ValueError):
    """The offer is refused; ``reason`` is stable and machine-readable, ``line`` the 1-based line
    number at fault (0 when the whole offer is)."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(f"{reason} (line {line})" if line else reason)
        self.reason = reason
        self.line = line


@dataclass
class _Scope:
    """ICE and DTLS attributes of the session or of one media section."""

    ufrag: str | None = None
    pwd: str | None = None
    setup: str | None = None
    sha256: bool = False
    seen_once: set[str] = field(default_factory=set)


@dataclass
class _Section:
    kind: str
    line: int
    formats: list[int]
    scope: _Scope = field(default_factory=_Scope)
    attributes: int = 0
    candidates: int = 0
    mid: str | None = None
    codecs: dict[int, str] = field(default_factory=dict)
    fmtp: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class OfferSummary:
    """What a valid offer holds: its kinds in order and its candidate count."""

    kinds: tuple[str, ...]
    candidates: int


# attributes that may appear at most once in one scope (a duplicate is either junk or an attack on
# whichever copy a parser keeps)
_ONCE = {"ice-ufrag", "ice-pwd", "setup", "mid", "rtcp-mux", "rtcp-rsize", "msid-semantic",
         "ice-lite", "ice-options", "sendrecv", "sendonly", "recvonly", "inactive", "rtcp"}


# attributes whose value an SDP parser reads: without one ("a=group") aiortc fails on None
_VALUED = {"candidate", "extmap", "fingerprint", "fmtp", "group", "ice-options", "ice-pwd", "ice-ufrag",
           "mid", "msid", "msid-semantic", "rtcp", "rtcp-fb", "rtpmap", "setup", "ssrc", "ssrc-group"}


def _int(text: str, low: int, high: int, reason: str, n: int) -> int:
    if not text.isdigit() or len(text) > 10:
        raise InvalidSdp(reason, n)
    value = int(text)
    if not low <= value <= high:
        raise InvalidSdp(reason, n)
    return value


def _check_fingerprint(value: str, scope: _Scope, n: int) -> None:
    parts = value.split(" ")
    if len(parts) != 2:
        raise InvalidSdp("bad_fingerprint", n)
    algorithm, digest = parts[0].lower(), parts[1]
    size = HASH_BYTES.get(algorithm)
    if size is None or not _FINGERPRINT.match(digest) or len(digest) != size * 3 - 1:
        raise InvalidSdp("bad_fingerprint", n)
    if algorithm == "sha-256":
        scope.sha256 = True


def _check_candidate(value: str, n: int) -> None:
    bits = value.split(" ")
    if len(bits) < 8 or len(bits) > 24 or not all(bits) or bits[6] != "typ":
        raise InvalidSdp("bad_candidate", n)
    foundation, component, transport, priority, host, port, _, typ = bits[:8]
    if not 1 <= len(foundation) <= 32 or not _ICE_CHARS.match(foundation):
        raise InvalidSdp("bad_candidate", n)
    _int(component, 1, 2, "bad_candidate", n)
    _int(priority, 0, 2**32 - 1, "bad_candidate", n)
    _int(port, 0, 65535, "bad_candidate", n)
    if transport.lower() not in ("udp", "tcp") or typ not in _CANDIDATE_TYPES or not _HOST.match(host):
        raise InvalidSdp("bad_candidate", n)
    extensions = bits[8:]
    if len(extensions) % 2:
        raise InvalidSdp("bad_candidate", n)
    for key, val in zip(extensions[::2], extensions[1::2], strict=True):
        if key == "rport":
            _int(val, 0, 65535, "bad_candidate", n)
        elif key == "raddr" and not _HOST.match(val):
            raise InvalidSdp("bad_candidate", n)


def _check_rtp_attribute(name: str, value: str, section: _Section, n: int) -> None:
    """The attributes whose numbers an SDP parser converts (aiortc with ``int()``)."""
    if name == "rtpmap":
        pt_text, _, desc = value.partition(" ")
        pt = _int(pt_text, 0, 127, "bad_rtpmap", n)
        bits = desc.split("/")
        if len(bits) not in (2, 3) or not _TOKEN.match(bits[0]) or pt in section.codecs:
            raise InvalidSdp("bad_rtpmap", n)
        _int(bits[1], 1, 10_000_000, "bad_rtpmap", n)
        if len(bits) == 3:
            _int(bits[2], 1, 8, "bad_rtpmap", n)
        section.codecs[pt] = f"{bits[0].lower()}/{bits[1]}"
    elif name == "fmtp":
        pt_text, sep, params = value.partition(" ")
        if not sep or not params:
            raise InvalidSdp("bad_fmtp", n)
        section.fmtp.append((_int(pt_text, 0, 127, "bad_fmtp", n), n))
        for param in params.split(";"):
            key, sep, val = param.partition("=")
            if sep and key.strip() in FMTP_INT_PARAMETERS:
                _int(val, 0, 10_000_000, "bad_fmtp", n)
    elif name == "rtcp-fb":
        bits = value.split(" ")
        if len(bits) < 2 or not all(bits) or (bits[0] != "*" and not bits[0].isdigit()):
            raise InvalidSdp("bad_rtcp_fb", n)
    elif name == "extmap":
        bits = value.split(" ")
        ident = bits[0].split("/")
        if len(bits) != 2 or not all(bits) or len(ident) > 2:
            raise InvalidSdp("bad_extmap", n)
        _int(ident[0], 1, 255, "bad_extmap", n)
    elif name == "ssrc":
        ssrc, _, desc = value.partition(" ")
        _int(ssrc, 0, 2**32 - 1, "bad_ssrc", n)
        if ":" not in desc:
            raise InvalidSdp("bad_ssrc", n)
    elif name == "ssrc-group":
        bits = value.split(" ")
        if len(bits) < 2 or not _TOKEN.match(bits[0]):
            raise InvalidSdp("bad_ssrc", n)  # (each ssrc below is checked as a number: none empty)
        for ssrc in bits[1:]:
            _int(ssrc, 0, 2**32 - 1, "bad_ssrc", n)
    elif name == "rtcp":
        port, sep, addr = value.partition(" ")
        _int(port, 0, 65535, "bad_rtcp", n)
        if sep and not _CONNECTION.match(addr):
            raise InvalidSdp("bad_rtcp", n)
    elif name == "mid":
        if not 1 <= len(value) <= 32 or not _TOKEN.match(value):
            raise InvalidSdp("bad_mid", n)
        section.mid = value
    elif name in ("sctpmap", "sctp-port", "max-message-size"):
        raise InvalidSdp("unsupported_attribute", n)


def _check_ice_dtls(name: str, value: str | None, scope: _Scope, n: int) -> None:
    if name == "ice-ufrag":
        if value is None or not 4 <= len(value) <= 256 or not _ICE_CHARS.match(value):
            raise InvalidSdp("bad_ice_credentials", n)
        scope.ufrag = value
    elif name == "ice-pwd":
        if value is None or not 22 <= len(value) <= 256 or not _ICE_CHARS.match(value):
            raise InvalidSdp("bad_ice_credentials", n)
        scope.pwd = value
    elif name == "setup":
        if value not in SETUP_VALUES:
            raise InvalidSdp("bad_setup", n)
        scope.setup = value
    elif name == "fingerprint":
        _check_fingerprint(value or "", scope, n)


def check_offer(sdp: str) -> OfferSummary:
    """Raise :class:`InvalidSdp` unless ``sdp`` is an offer the media node takes; see the module doc."""
    if not isinstance(sdp, str):
        raise InvalidSdp("not_text")
    if len(sdp.encode("utf-8", "replace")) > MAX_BYTES:
        raise InvalidSdp("too_large")
    if _PRINTABLE.search(sdp):
        raise InvalidSdp("bad_characters")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in sdp.replace("\r\n", ""):
        raise InvalidSdp("bad_line_break")
    if len(lines) > MAX_LINES:
        raise InvalidSdp("too_many_lines")
    if not lines or lines[0] != "v=0":
        raise InvalidSdp("not_sdp", 1)

    session = _Scope()
    sections: list[_Section] = []
    session_lines: dict[str, int] = {}
    bundle: list[tuple[list[str], int]] = []
    candidates = 0
    for n, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE:
            raise InvalidSdp("line_too_long", n)
        if len(line) < 2 or line[1] != "=" or line[0] not in LINE_TYPES:
            raise InvalidSdp("bad_line", n)
        kind, value = line[0], line[2:]
        if kind == "m":
            m = _M_LINE.match(line)
            if m is None:
                raise InvalidSdp("bad_media_line", n)
            media, port, transport, formats = m.groups()
            if media not in KINDS:
                raise InvalidSdp("unsupported_media", n)
            if any(s.kind == media for s in sections):
                raise InvalidSdp("too_many_sections", n)
            if transport != TRANSPORT:
                raise InvalidSdp("unsupported_transport", n)
            _int(port, 0, 65535, "bad_media_line", n)
            pts = formats.split(" ")
            if not 1 <= len(pts) <= MAX_FORMATS:
                raise InvalidSdp("bad_media_line", n)
            numbers = [_int(pt, 0, 127, "bad_media_line", n) for pt in pts]
            if any(72 <= pt <= 76 for pt in numbers):  # RTCP packet types (RFC 5761)
                raise InvalidSdp("bad_media_line", n)
            sections.append(_Section(media, n, numbers))
            continue
        section = sections[-1] if sections else None
        if section is None and kind in "vost":
            if kind in session_lines and kind != "t":
                raise InvalidSdp("duplicate_line", n)
            session_lines[kind] = n
        elif kind in "vos":
            raise InvalidSdp("misplaced_line", n)
        if kind == "c" and not _CONNECTION.match(value):
            raise InvalidSdp("bad_connection", n)
        if kind != "a":
            continue
        name, sep, attr_value = value.partition(":")
        scope = section.scope if section is not None else session
        if section is not None:
            section.attributes += 1
            if section.attributes > MAX_ATTRIBUTES:
                raise InvalidSdp("too_many_attributes", n)
        if name in _VALUED and not sep:
            raise InvalidSdp("bad_attribute", n)
        if name in _ONCE:
            if name in scope.seen_once:
                raise InvalidSdp("duplicate_line", n)
            scope.seen_once.add(name)
        _check_ice_dtls(name, attr_value if sep else None, scope, n)
        if name == "group":
            bits = attr_value.split(" ")
            if bits[0] == "BUNDLE":
                bundle.append((bits[1:], n))
        elif name == "candidate":
            if section is None:
                raise InvalidSdp("misplaced_line", n)
            _check_candidate(attr_value, n)
            section.candidates += 1
            candidates += 1
            if section.candidates > MAX_CANDIDATES:
                raise InvalidSdp("too_many_candidates", n)
        elif section is not None:
            _check_rtp_attribute(name, attr_value, section, n)
        elif name in ("rtpmap", "fmtp", "ssrc", "mid", "rtcp-fb", "extmap"):
            raise InvalidSdp("misplaced_line", n)

    for kind in "ost":
        if kind not in session_lines:
            raise InvalidSdp("missing_line")
    if not sections:
        raise InvalidSdp("no_media")
    mids: set[str] = set()
    for s in sections:
        if s.mid is not None and s.mid in mids:
            raise InvalidSdp("duplicate_line", s.line)
        if s.mid is not None:
            mids.add(s.mid)
        if not (s.scope.ufrag or session.ufrag) or not (s.scope.pwd or session.pwd):
            raise InvalidSdp("missing_ice_credentials", s.line)
        if not (s.scope.sha256 or session.sha256):
            raise InvalidSdp("missing_fingerprint", s.line)
        if not (s.scope.setup or session.setup):
            raise InvalidSdp("missing_setup", s.line)
        for pt, n in s.fmtp:
            if pt not in s.codecs:
                raise InvalidSdp("bad_fmtp", n)
        offered = {s.codecs.get(pt, {0: "pcmu/8000", 8: "pcma/8000"}.get(pt, "")) for pt in s.formats}
        if not offered & (AUDIO_CODECS if s.kind == "audio" else VIDEO_CODECS):
            raise InvalidSdp("no_supported_codec", s.line)
    for group, n in bundle:
        if any(mid not in mids for mid in group):
            raise InvalidSdp("bad_group", n)
    return OfferSummary(kinds=tuple(s.kind for s in sections), candidates=candidates)
