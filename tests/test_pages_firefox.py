"""The join page in headless Firefox ESR against a real `backupplus serve`: join, see, leave, refused,
ended — the same server fixtures as tests/test_pages_browser.py (Chromium).

Firefox is driven by tests/firefox.py (puppeteer-core over WebDriver BiDi, fake camera and microphone).
Firefox counts no playback frames for a MediaStream, so remote video is checked by the `<video>`'s
currentTime moving and its picture changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.firefox import Firefox
from tests.test_pages_browser import HOTLINE, Api, _fill, conference, server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.timeout(180)]

REMOTE_PICTURE_JS = """async () => {
  const v = document.getElementById('remote');
  const c = document.createElement('canvas');
  c.width = 64; c.height = 36;
  const g = c.getContext('2d', { willReadFrequently: true });
  const snap = () => { g.drawImage(v, 0, 0, c.width, c.height); return g.getImageData(0, 0, c.width, c.height).data; };
  const t0 = v.currentTime;
  const first = snap().join();
  let last = snap(), waited = 0;
  while (waited < 8000 && !(v.currentTime > t0 && last.join() !== first)) {
    await new Promise((r) => setTimeout(r, 200));
    waited += 200;
    last = snap();
  }
  let luma = 0;
  for (let i = 0; i < last.length; i += 4) luma += 0.299 * last[i] + 0.587 * last[i + 1] + 0.114 * last[i + 2];
  return { id: v.id, hidden: v.hidden, advanced: v.currentTime - t0, changed: last.join() !== first,
           width: v.videoWidth, height: v.videoHeight, luma: luma / (last.length / 4) };
}"""


def _state_is(state: str) -> str:
    return f"() => document.body.dataset.state === {state!r}"


def _text(ff: Firefox, page: int, selector: str) -> str:
    return str(ff.eval(page, "(s) => { const e = document.querySelector(s); return e ? e.textContent : null; }", selector))


def _names(api: Api, conf: dict[str, Any]) -> list[str]:
    doc = api.ok("GET", f"/v1/conferences/{conf['id']}", token=conf["token"])
    return sorted(p["display_name"] for p in doc["participants"])


def _eventually(check: Callable[[], bool], timeout: float) -> bool:
    """Whether ``check()`` comes true within ``timeout`` seconds (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def firefox() -> Iterator[Firefox]:
    with Firefox() as ff:
        yield ff


@pytest.fixture
def pages(firefox: Firefox) -> Iterator[list[int]]:
    """Pages opened by a test: closed after it, with no script error or CSP report left behind."""
    opened: list[int] = []
    yield opened
    problems = [p for page in opened for p in firefox.problems(page)]
    for page in opened:
        firefox.close_page(page)
    assert not problems, problems


def test_join_see_leave(server: Api, conference: dict[str, Any], firefox: Firefox, pages: list[int]) -> None:  # noqa: F811
    for name in ("Ann", "Bob"):
        pages.append(firefox.open(conference["join_url"] + f"?name={name}&kind=video&autojoin=1"))
    ann, bob = pages
    for page in (ann, bob):
        firefox.wait(page, _state_is("connected"), timeout=30)
        assert _text(firefox, page, "#status") == "You are in the conference."
    for page in (ann, bob):
        firefox.wait(page, "() => { const v = document.getElementById('remote'); return v && v.currentTime > 0; }", 20)
        seen = firefox.eval(page, REMOTE_PICTURE_JS)
        assert seen["id"] == "remote" and not seen["hidden"], seen
        assert seen["advanced"] > 0 and seen["changed"], seen  # frames keep coming
        assert 0 < seen["height"] <= 480, seen  # the MCU's grid, never above 480 lines
        assert seen["luma"] > 20, seen  # pictures, not a black screen
    conf = server.ok("GET", f"/v1/conferences/{conference['id']}", token=conference["token"])
    assert sorted((p["display_name"], p["kind"]) for p in conf["participants"]) == [("Ann", "video"), ("Bob", "video")]
    # Leave frees the port at once.
    firefox.click(ann, "#leave")
    firefox.wait(ann, _state_is("idle"), timeout=10)
    assert _eventually(lambda: _names(server, conference) == ["Bob"], 5), _names(server, conference)


def test_refused_when_all_ports_are_taken(
    server: Api,  # noqa: F811
    conference: dict[str, Any],  # noqa: F811
    firefox: Firefox,
    pages: list[int],
) -> None:
    _fill(server, conference, "video", 10)
    _fill(server, conference, "audio", 8)
    page = firefox.open(conference["join_url"] + "?name=Eve&kind=video&autojoin=1")
    pages.append(page)
    firefox.wait(page, _state_is("refused"), timeout=15)
    why = _text(firefox, page, "#refused-why")
    assert "all 10 video places and all 8 audio places are taken" in why, why
    assert _text(firefox, page, "#status") == "You could not join: no place is free right now."
    assert _text(firefox, page, "#refused-phone") == HOTLINE
    assert firefox.eval(page, "() => document.getElementById('refused-phone').getAttribute('href')") == "tel:+33442901600"
    assert "Eve" not in _names(server, conference)


def test_restore_ends_the_call(
    server: Api,  # noqa: F811
    conference: dict[str, Any],  # noqa: F811
    firefox: Firefox,
    pages: list[int],
) -> None:
    page = firefox.open(conference["join_url"] + "?name=Gus&kind=video&autojoin=1")
    pages.append(page)
    firefox.wait(page, _state_is("connected"), timeout=30)
    firefox.eval(
        page,
        """() => { window.bpStates = [];
          new MutationObserver(() => window.bpStates.push(document.body.dataset.state))
            .observe(document.body, { attributes: true, attributeFilter: ['data-state'] }); }""",
    )
    server.ok("POST", f"/v1/outages/{conference['outage']}/restore")
    firefox.wait(page, _state_is("ended"), timeout=15)
    assert "idle" not in firefox.eval(page, "() => window.bpStates")  # straight to "ended", never "removed"
    assert "your own video system is working again" in _text(firefox, page, "#ended")
    assert _text(firefox, page, "#ended-phone") == HOTLINE
    assert firefox.eval(page, "() => document.getElementById('join-form').hidden") is True
    # Local capture is stopped.
    assert firefox.eval(page, "() => document.getElementById('preview').srcObject === null") is True
