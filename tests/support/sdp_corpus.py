"""Malformed and abusive SDP offers, each made from a valid browser-like offer (issue 15): every one
must be refused with a 4xx, by the API and by the media node, and change nothing.

``corpus(valid)`` maps a name to (the SDP, the ``reason`` ``infra.sdpcheck`` gives it, "" when that
depends on the offer it is made from). Test support:
not part of the installed package."""

from __future__ import annotations

import random
import re

CRLF = "\r\n"


def _lines(sdp: str) -> list[str]:
    return sdp.rstrip(CRLF).split(CRLF)


def _join(lines: list[str]) -> str:
    return CRLF.join(lines) + CRLF


def _replace(sdp: str, pattern: str, repl: str, count: int = 0) -> str:
    """``pattern`` replaced in each line (at most ``count`` lines when given)."""
    out, done = [], 0
    for line in _lines(sdp):
        if (not count or done < count) and re.search(pattern, line):
            line, done = re.sub(pattern, repl, line), done + 1
        out.append(line)
    assert done, f"corpus: {pattern!r} not in the offer"
    return _join(out)


def _drop(sdp: str, prefix: str) -> str:
    lines = _lines(sdp)
    kept = [line for line in lines if not line.startswith(prefix)]
    assert len(kept) < len(lines), f"corpus: no {prefix!r} line"
    return _join(kept)


def _sections(sdp: str) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    media: list[list[str]] = []
    for line in _lines(sdp):
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def _with_attribute(sdp: str, line: str, times: int = 1) -> str:
    """``line`` added ``times`` at the end of the first media section's attributes."""
    session, media = _sections(sdp)
    media[0] += [line] * times
    return _join(session + [x for m in media for x in m])


def _candidates(sdp: str, n: int, host: str = "127.0.0.1") -> str:
    session, media = _sections(sdp)
    media[0] += [f"a=candidate:{i} 1 udp {2130706431 - i} {host} {10000 + i} typ host" for i in range(n)]
    return _join(session + [x for m in media for x in m])


def corpus(valid: str) -> dict[str, tuple[str, str]]:
    """Every case: name -> (sdp, the reason infra.sdpcheck refuses it with)."""
    rng = random.Random(15)
    session, media = _sections(valid)
    audio = next(m for m in media if m[0].startswith("m=audio"))
    video = next(m for m in media if m[0].startswith("m=video"))
    ufrag_line = next(line for line in _lines(valid) if line.startswith("a=ice-ufrag:"))
    cut_fingerprint = valid[: valid.index("a=fingerprint:sha-256") + 40]
    cases: dict[str, tuple[str, str]] = {
        "hello world": ("hello world", "not_sdp"),
        "empty": ("", "not_sdp"),
        "only v=0": ("v=0\r\n", "missing_line"),
        "truncated: half": (valid[: len(valid) // 2], ""),  # the reason depends on where it falls
        "truncated: session only": (valid[: valid.index("m=audio")], "no_media"),
        "truncated: mid-fingerprint": (cut_fingerprint, "bad_fingerprint"),
        "truncated: mid-line": (valid[: valid.index("m=audio") + 9], "bad_media_line"),
        "no m-line": (_join(session), "no_media"),
        "500 m-lines (1 MB)": (_join(session + audio * 500), "too_large"),
        "520 small m-lines": (_join(session + [x for i in range(520) for x in (f"m=audio 9 {'UDP/TLS/RTP/SAVPF'} 0",
                                                                                   f"a=mid:{i}")]),
                              "too_many_lines"),
        "three m-lines, small": (_join(session + audio + video + audio), "too_many_sections"),
        "two audio sections": (_join(session + audio + audio), "too_many_sections"),
        "datachannel section": (
            _join(session + audio + ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=sctp-port:5000"]),
            "unsupported_media",
        ),
        "duplicated v=": (_join(["v=0", *_lines(valid)]), "duplicate_line"),
        "duplicated ice-ufrag": (_with_attribute(valid, ufrag_line), "duplicate_line"),
        "duplicated setup": (_with_attribute(valid, "a=setup:actpass"), "duplicate_line"),
        "duplicated mid": (_replace(valid, r"^a=mid:1$", "a=mid:0"), "duplicate_line"),
        "huge attribute": (_with_attribute(valid, "a=x-junk:" + "A" * 5000), "line_too_long"),
        "huge fingerprint": (_replace(valid, r"^a=fingerprint:sha-256 .*$", "a=fingerprint:sha-256 " + "AB:" * 400 + "AB",
                                      count=1), "line_too_long"),
        "40 KB of attributes": (_with_attribute(valid, "a=x-junk:" + "B" * 200, 200), "too_large"),
        "1,001 short lines": (_with_attribute(valid, "a=x", 1001), "too_many_lines"),
        "300 attributes in a section": (_with_attribute(valid, "a=x", 300), "too_many_attributes"),
        "200 loopback candidates": (_candidates(valid, 200), "too_many_candidates"),
        "fingerprint: 31 bytes": (_replace(valid, r"^(a=fingerprint:sha-256 )[0-9A-F]{2}:", r"\1"), "bad_fingerprint"),
        "fingerprint: not hex": (_replace(valid, r"^(a=fingerprint:sha-256 )[0-9A-F]{2}", r"\1ZZ"), "bad_fingerprint"),
        "fingerprint: md5": (_replace(valid, r"^a=fingerprint:sha-256 ", "a=fingerprint:md5 "), "bad_fingerprint"),
        "fingerprint: none": (_drop(valid, "a=fingerprint:"), "missing_fingerprint"),
        "fingerprint: sha-1 only": (
            _replace(_drop(valid, "a=fingerprint:"), r"^a=setup:", "a=fingerprint:sha-1 " + ":".join(["AB"] * 20)
                     + "\r\na=setup:"),
            "missing_fingerprint",
        ),
        "missing ice-ufrag": (_drop(valid, "a=ice-ufrag:"), "missing_ice_credentials"),
        "missing ice-pwd": (_drop(valid, "a=ice-pwd:"), "missing_ice_credentials"),
        "ice-pwd too short": (_replace(valid, r"^a=ice-pwd:.*$", "a=ice-pwd:short"), "bad_ice_credentials"),
        "ice-ufrag with spaces": (_replace(valid, r"^a=ice-ufrag:.*$", "a=ice-ufrag:a b c d"), "bad_ice_credentials"),
        "setup: holdconn": (_replace(valid, r"^a=setup:actpass$", "a=setup:holdconn"), "bad_setup"),
        "setup: missing": (_drop(valid, "a=setup:"), "missing_setup"),
        "transport: RTP/AVP": (_replace(valid, r"UDP/TLS/RTP/SAVPF", "RTP/AVP"), "unsupported_transport"),
        "unknown audio codec": (
            _join(session + [re.sub(r"SAVPF( \d+)+$", "SAVPF 96", audio[0])]
                  + [line for line in audio[1:] if not line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"))]
                  + ["a=rtpmap:96 x-secret-codec/48000/2"]),
            "no_supported_codec",
        ),
        "video without VP8": (_replace(valid, r"^a=rtpmap:(\d+) VP8/90000$", r"a=rtpmap:\1 H263/90000"),
                              "no_supported_codec"),
        "rtpmap: clock not a number": (_replace(valid, r"^a=rtpmap:(\d+) opus/48000/2$", r"a=rtpmap:\1 opus/fast/2"),
                                       "bad_rtpmap"),
        "fmtp for an unknown payload type": (_with_attribute(valid, "a=fmtp:123 apt=1"), "bad_fmtp"),
        "rtcp-fb without a type": (_with_attribute(valid, "a=rtcp-fb:96"), "bad_rtcp_fb"),
        "extmap with three fields": (_with_attribute(valid, "a=extmap:5 urn:x extra"), "bad_extmap"),
        "ssrc not a number": (_with_attribute(valid, "a=ssrc:abc cname:x"), "bad_ssrc"),
        "m-line: payload type 300": (_replace(valid, r"^(m=audio \d+ UDP/TLS/RTP/SAVPF) ", r"\1 300 "),
                                     "bad_media_line"),
        "m-line: RTCP payload type 72": (_replace(valid, r"^(m=audio \d+ UDP/TLS/RTP/SAVPF) ", r"\1 72 "),
                                         "bad_media_line"),
        "m-line: port not a number": (_replace(valid, r"^m=audio \d+ ", "m=audio port "), "bad_media_line"),
        "candidate: port not a number": (_with_attribute(valid, "a=candidate:1 1 udp 1 127.0.0.1 http typ host"),
                                         "bad_candidate"),
        "candidate: seven fields": (_with_attribute(valid, "a=candidate:1 1 udp 1 127.0.0.1 9 typ"), "bad_candidate"),
        "candidate: component 3": (_with_attribute(valid, "a=candidate:1 3 udp 1 127.0.0.1 9 typ host"),
                                   "bad_candidate"),
        "connection line: junk": (_replace(valid, r"^c=IN IP4 .*$", "c=junk", count=1), "bad_connection"),
        "bundle names an unknown mid": (_replace(valid, r"^a=group:BUNDLE .*$", "a=group:BUNDLE 0 1 7"), "bad_group"),
        "group without its value": (_replace(valid, r"^a=group:BUNDLE .*$", "a=group"), "bad_attribute"),
        "extmap with an empty uri": (_with_attribute(valid, "a=extmap:5 "), "bad_extmap"),
        "rtcp with an empty address": (
            _with_attribute(_join([x for x in _lines(valid) if not x.startswith("a=rtcp:")]), "a=rtcp:9 "), "bad_rtcp"
        ),
        "fmtp apt not a number": (_with_attribute(valid, "a=fmtp:111 apt=x"), "bad_fmtp"),
        "NUL bytes": (valid.replace("s=-", "s=\x00\x00"), "bad_characters"),
        "binary junk": (bytes(rng.randrange(256) for _ in range(3000)).decode("latin-1"), "bad_characters"),
        "binary after v=0": ("v=0\r\n" + bytes(rng.randrange(256) for _ in range(500)).decode("latin-1"),
                             "bad_characters"),
        "unicode line separators": (valid.replace(CRLF, "\u2028"), "bad_characters"),
        "bare CR line breaks": (valid.replace(CRLF, "\r"), "bad_line_break"),
        "line without '='": (_with_attribute(valid, "hello"), "bad_line"),
        "unknown line type": (_with_attribute(valid, "x=1"), "bad_line"),
    }
    return cases
