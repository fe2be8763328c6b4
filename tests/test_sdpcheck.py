"""infra.sdpcheck: real browsers' offers pass; every malformed or abusive offer of the corpus is refused
with its reason; and whatever passes the check, aiortc's parser takes without an exception (a fuzz
round of mutated offers and of arbitrary text)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.sdpcheck import InvalidSdp, check_offer
from tests.support.sdp_corpus import corpus

OFFERS = Path(__file__).parent / "support" / "offers"
# Offers made by Debian's Chromium and Firefox ESR (an audio and a video transceiver, candidates
# gathered); kept as they came, CRLF included.
BROWSERS = {name: (OFFERS / f"{name}.sdp").read_bytes().decode() for name in ("chrome", "firefox")}


def _aiortc_offer() -> str:
    import asyncio

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    return asyncio.run(make())


AIORTC = _aiortc_offer()
CORPUS = corpus(BROWSERS["chrome"])


@pytest.mark.parametrize("name", [*BROWSERS, "aiortc"])
def test_browsers_offers_pass(name: str) -> None:
    sdp = BROWSERS.get(name, AIORTC)
    summary = check_offer(sdp)
    assert summary.kinds == ("audio", "video") and summary.candidates > 0
    assert check_offer(sdp.replace("\r\n", "\n")).kinds == ("audio", "video")  # bare LF: tolerated


def test_an_audio_only_offer_passes() -> None:
    sdp = BROWSERS["chrome"]
    audio_only = sdp[: sdp.index("m=video")].replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
    assert check_offer(audio_only).kinds == ("audio",)


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_corpus_is_refused(name: str) -> None:
    sdp, reason = CORPUS[name]
    with pytest.raises(InvalidSdp) as refused:
        check_offer(sdp)
    assert refused.value.reason == (reason or refused.value.reason)


@pytest.mark.parametrize("base", ["firefox", "aiortc"])
def test_the_corpus_from_other_bases_is_refused(base: str) -> None:
    for name, (sdp, _) in corpus(BROWSERS.get(base, AIORTC)).items():
        with pytest.raises(InvalidSdp):
            check_offer(sdp)
            pytest.fail(f"{base}: {name} passed")


def _parses(sdp: str) -> None:
    """What passed the check, aiortc parses (the node's setRemoteDescription starts there)."""
    try:
        check_offer(sdp)
    except InvalidSdp:
        return
    SessionDescription.parse(sdp)


_LINES = BROWSERS["chrome"].rstrip("\r\n").split("\r\n")


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A browser's offer with a few lines dropped, duplicated, cut or given junk."""
    lines = list(_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "cut", "junk", "swap"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "junk":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12))
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    return "\r\n".join(lines) + "\r\n"


_FIELD_CHARS = st.sampled_from(list("0123456789 :/;=-.abcxyzAF") + ["  ", "IN IP4 ", "typ ", "sha-256 "])


@st.composite
def revalued(draw: st.DrawFn) -> str:
    """A browser's offer with the values of a few lines replaced by SDP-looking junk."""
    lines = list(_LINES)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(1, len(lines) - 1))
        head = lines[i].split(":", 1)[0] + ":" if ":" in lines[i] else lines[i][:2]
        lines[i] = head + "".join(draw(st.lists(_FIELD_CHARS, max_size=12)))
    return "\r\n".join(lines) + "\r\n"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(revalued())
def test_what_passes_aiortc_parses_offers_with_junk_values(sdp: str) -> None:
    _parses(sdp)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_what_passes_aiortc_parses_mutated_offers(sdp: str) -> None:
    _parses(sdp)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_is_refused_or_parsed(text: str) -> None:
    _parses(text)
    _parses("v=0\r\n" + text)
