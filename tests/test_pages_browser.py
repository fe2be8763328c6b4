"""The join page and the console in headless Chromium against a real `backupplus serve`.

One server (with its in-process media node) per module; every test declares its own outage on its
own contract. Pages are driven through the hooks API.md fixes: `?name=&kind=&autojoin=1`,
`document.body.dataset.state`, remote video in `<video>`, the console's `input[name=token]` + Enter.

States are awaited with `page.wait_for_function("() => document.body.dataset.state === ...")`, the way
an outside check following API.md would: a function predicate, which the CSP (no 'unsafe-eval') allows.

Set BACKUPPLUS_DOCS_SCREENSHOTS=1 to refresh docs/img/*.png.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from infra.redisproc import RedisServer, free_port
from tests.broker_process import stop_process
from tests.chromium import CHROMIUM_ARGS, require_chromium

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.timeout(120)]

OPERATOR = "op-pages-test-token-0123456789abcdef"
HOTLINE = "+33 4 42 90 16 00"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
SHOTS = os.environ.get("BACKUPPLUS_DOCS_SCREENSHOTS") == "1"



# ------------------------------------------------------------------------------------------ server
class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self, method: str, path: str, body: Any = None, token: str = OPERATOR
    ) -> tuple[int, Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None, dict(exc.headers)

    def ok(self, method: str, path: str, body: Any = None, token: str = OPERATOR) -> Any:
        status, doc, _ = self.call(method, path, body, token)
        assert 200 <= status < 300, (method, path, status, doc)
        return doc


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    env["BACKUPPLUS_OPERATOR_TOKENS"] = OPERATOR
    env["BACKUPPLUS_HOTLINE_PHONE"] = HOTLINE
    env["BACKUPPLUS_ADMISSION_RATE_BURST"] = "1000"  # the tests fill an outage from one link at once
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backupplus.cli",
                "serve",
                "--redis-url",
                redis_server.url,
                "--port",
                str(port),
                "--state-dir",
                str(log.parent / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "serve not ready:\n" + log.read_text()
            time.sleep(0.2)
        yield Api(base)
    finally:
        stop_process(proc)


_contract_numbers = itertools.count(1)


def _contract(api: Api) -> tuple[str, str]:
    today = date.today()
    number = f"PG-{os.getpid()}-{next(_contract_numbers)}"
    api.ok(
        "PUT",
        f"/v1/contracts/{number}",
        {
            "number": number,
            "client": {"company": "Mairie <b>de</b> Test"},
            "start_date": str(today - timedelta(days=30)),
            "term_years": 3,
            "status": "active",
            "equipment": [
                {
                    "serial": f"{number}-MCU",
                    "brand": "Poly",
                    "model": "RMX 1800",
                    "kind": "video_bridge",
                    "warranty_until": str(today + timedelta(days=400)),
                },
                {
                    "serial": f"{number}-PJ",
                    "brand": "Epson",
                    "model": "EB-L",
                    "kind": "projector",
                    "warranty_until": str(today + timedelta(days=400)),
                },
            ],
        },
    )
    return number, f"{number}-MCU"


@pytest.fixture
def conference(server: Api) -> Iterator[dict[str, Any]]:
    """An active outage with one conference: {"outage", "id", "join_url", "token"}."""
    number, serial = _contract(server)
    outage = server.ok(
        "POST",
        "/v1/outages",
        {
            "contract": number,
            "serial": serial,
            "ticket": {
                "priority": "urgent",
                "site": "Aix",
                "contact": "M. Test",
                "description": "bridge down",
            },
        },
    )
    conf = server.ok("POST", f"/v1/outages/{outage['id']}/conferences", {"title": "Comité <i>direction</i>"})
    yield {
        "outage": outage["id"],
        "id": conf["id"],
        "join_url": conf["join_url"],
        "token": conf["join_token"],
    }
    server.call("POST", f"/v1/outages/{outage['id']}/restore")


def _fill(api: Api, conf: dict[str, Any], kind: str, n: int) -> list[str]:
    """Take n ports of kind through the API (no media: their leases would lapse after 30 s)."""
    ids = []
    for i in range(n):
        p = api.ok(
            "POST",
            f"/v1/conferences/{conf['id']}/participants",
            {"display_name": f"filler {kind} {i}", "kind": kind, "downgrade": False},
            token=conf["token"],
        )
        ids.append(p["id"])
    return ids


# ------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Pages:
    """Opens pages in fresh contexts and collects CSP violations and script errors."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.problems: list[str] = []

    def open(self, url: str | None = None, locale: str = "en-GB", **ctx: Any) -> Any:
        context = self.browser.new_context(locale=locale, viewport={"width": 1280, "height": 860}, **ctx)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: (
                self.problems.append(m.text)
                if "Content Security Policy" in m.text or "Refused to" in m.text
                else None
            ),
        )
        if url:
            page.goto(url)
        return page

    def close(self) -> None:
        for c in self.contexts:
            c.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    p = Pages(browser)
    yield p
    p.close()
    assert not p.problems, p.problems


def _state(page: Any, state: str, timeout: float = 20) -> None:
    page.wait_for_function(f"() => document.body.dataset.state === {json.dumps(state)}", timeout=timeout * 1000)


RECORD_STATES_JS = """() => {
  window.bpStates = [];
  new MutationObserver(() => window.bpStates.push(document.body.dataset.state))
    .observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
}"""

FRAMES_JS = """async () => {
  const v = document.querySelector('video');
  const t0 = v.currentTime;
  const frames = await new Promise((resolve) => {
    let n = 0;
    const cb = () => { if (++n >= 5) resolve(n); else v.requestVideoFrameCallback(cb); };
    v.requestVideoFrameCallback(cb);
    setTimeout(() => resolve(n), 8000);
  });
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const data = g.getImageData(0, 0, c.width, c.height).data;
  let green = 0, samples = 0;
  for (let y = 0; y < c.height; y += 16) for (let x = 0; x < c.width; x += 16) {
    const i = (y * c.width + x) * 4;
    samples++;
    if (data[i + 1] > 80 && data[i + 1] > data[i] + 40 && data[i + 1] > data[i + 2] + 40) green++;
  }
  return {id: v.id, frames, advanced: v.currentTime - t0, height: v.videoHeight, width: v.videoWidth,
          green: green / samples};
}"""


def _overdue_reported_at() -> datetime:
    """A past call time (within the 7 days a declare accepts) whose restore deadline has passed."""
    from broker import sla

    now = datetime.now(UTC)
    for hours in range(1, 24 * 7 - 1):
        reported = now - timedelta(hours=hours)
        if sla.compute(reported, "medium").restore_deadline < now - timedelta(minutes=2):
            return reported
    raise AssertionError("no such moment in the last 7 days")


def _shot(page: Any, name: str, full_page: bool = False) -> None:
    if SHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(DOCS_IMG / name), full_page=full_page)


# ------------------------------------------------------------------------------------------ tests
def test_two_participants_see_each_other(server: Api, conference: dict[str, Any], pages: Pages) -> None:
    ann = pages.open(conference["join_url"] + "?name=Ann&kind=video&autojoin=1")
    bob = pages.open(conference["join_url"] + "?name=Bob&kind=video&autojoin=1")
    for page in (ann, bob):
        _state(page, "connected")
    for page in (ann, bob):
        page.wait_for_selector("body[data-first-frame]", state="attached", timeout=15000)
        info = page.evaluate(FRAMES_JS)
        assert info["id"] == "remote"
        assert 0 < info["height"] <= 480, info
        assert info["frames"] >= 5 and info["advanced"] > 0, info
        # Real pictures, not black: Chromium's fake cameras are green (the grid's layout is the MCU's).
        assert info["green"] > 0.15, info
        assert page.locator("#status").text_content() == "You are in the conference."
        assert page.locator("#notice").is_hidden()
    conf = server.ok("GET", f"/v1/conferences/{conference['id']}", token=conference["token"])
    assert sorted((p["display_name"], p["kind"]) for p in conf["participants"]) == [
        ("Ann", "video"),
        ("Bob", "video"),
    ]
    _shot(ann, "join-connected.png")
    # Leave frees the port at once.
    ann.click("#leave")
    _state(ann, "idle")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        conf = server.ok("GET", f"/v1/conferences/{conference['id']}", token=conference["token"])
        if [p["display_name"] for p in conf["participants"]] == ["Bob"]:
            break
        time.sleep(0.2)
    assert [p["display_name"] for p in conf["participants"]] == ["Bob"]


def test_video_joiner_downgraded_to_audio_when_video_is_full(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    _fill(server, conference, "video", 10)
    page = pages.open(conference["join_url"] + "?name=Dana&kind=video&autojoin=1")
    _state(page, "connected")
    notice = page.locator("#notice")
    assert notice.is_visible()
    assert "All 10 video places are taken: you joined with audio" in notice.text_content()
    assert page.locator("#status").text_content() == "You are in the conference, with sound only."
    conf = server.ok("GET", f"/v1/conferences/{conference['id']}", token=conference["token"])
    dana = [p for p in conf["participants"] if p["display_name"] == "Dana"]
    assert len(dana) == 1 and dana[0]["kind"] == "audio"
    # An audio participant sends no camera.
    assert page.evaluate("() => document.getElementById('preview').srcObject === null")


def test_joiner_refused_when_all_ports_are_taken(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    _fill(server, conference, "video", 10)
    _fill(server, conference, "audio", 8)
    page = pages.open(conference["join_url"] + "?name=Eve&kind=video&autojoin=1")
    _state(page, "refused", timeout=10)
    why = page.locator("#refused-why").text_content()
    assert "all 10 video places and all 8 audio places are taken" in why, why
    assert page.locator("#status").text_content() == "You could not join: no place is free right now."
    retry = page.locator("#refused-retry").text_content()
    assert "try again automatically in" in retry
    seconds = int("".join(ch for ch in retry.split("in", 1)[1] if ch.isdigit()))
    assert 20 <= seconds <= 30  # from Retry-After (30 s)
    phone = page.locator("#refused-phone")
    assert phone.text_content() == HOTLINE
    assert phone.get_attribute("href") == "tel:+33442901600"
    assert page.locator("#retry").is_visible()
    _shot(page, "join-refused.png")
    # Nothing was admitted for Eve.
    conf = server.ok("GET", f"/v1/conferences/{conference['id']}", token=conference["token"])
    assert "Eve" not in [p["display_name"] for p in conf["participants"]]


def test_restore_ends_the_call_and_keyboard_join(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    page = pages.open(conference["join_url"] + "?kind=audio")
    _state(page, "idle")
    page.wait_for_selector("#status:has-text('press Join')", timeout=10000)
    # Keyboard only: type the name and press Enter in the field.
    page.focus("#name")
    page.keyboard.type("Frédéric <b>")
    page.keyboard.press("Enter")
    _state(page, "connected")
    assert page.locator("#window").is_hidden()  # no clock ends Backup+: nothing planned, nothing shown
    # The hotline plans an end in 5 minutes: the page warns (within 10 minutes of it).
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    server.ok("POST", f"/v1/outages/{conference['outage']}/extend", {"window_ends_at": soon})
    page.wait_for_selector("#window.soon:has-text('as the hotline planned')", timeout=10000)
    page.evaluate(RECORD_STATES_JS)
    server.ok("POST", f"/v1/outages/{conference['outage']}/restore")
    _state(page, "ended", timeout=15)
    # Straight to "ended": a restore also marks participants "left", and the page once took that
    # for a removal by the hotline (idle, "removed") until its next poll, up to 15 s later.
    assert "idle" not in page.evaluate("() => window.bpStates")
    assert "your own video system is working again" in page.locator("#ended").text_content()
    assert page.locator("#ended-phone").text_content() == HOTLINE
    assert page.locator("#join-form").is_hidden()
    # Local capture is stopped.
    assert page.evaluate("() => document.getElementById('preview').srcObject === null")


def test_french_from_browser_language_and_switch(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    page = pages.open(conference["join_url"], locale="fr-FR")
    page.wait_for_selector("#join:has-text('Rejoindre')", timeout=10000)
    page.wait_for_selector("#preview:not([hidden])", timeout=10000)  # camera preview before joining
    page.wait_for_selector("#camera option", state="attached")
    _shot(page, "join-idle-fr.png")
    assert page.evaluate("() => document.documentElement.lang") == "fr"
    assert page.locator("label[for=name]").text_content() == "Votre nom"
    page.click("#lang-switch")
    page.wait_for_selector("#join:has-text('Join')")
    assert page.evaluate("() => document.documentElement.lang") == "en"
    page.reload()
    page.wait_for_selector("#join:has-text('Join')")  # the choice sticks
    # The conference title (operator-provided) is text, not markup.
    page.wait_for_selector("#conf-title:has-text('Comité <i>direction</i>')")
    assert page.locator("#conf-title i").count() == 0


def test_invalid_join_link(server: Api, pages: Pages) -> None:
    page = pages.open(server.base + "/join/jt1.not.genuine")
    assert page.locator("h1").first.text_content() == "This join link is not valid"
    assert page.evaluate("() => document.body.dataset.state") == "ended"


def test_console_declares_shows_restores(server: Api, pages: Pages) -> None:
    number, serial = _contract(server)
    page = pages.open(server.base + "/console")
    page.fill("input[name=token]", "wrong")
    page.press("input[name=token]", "Enter")
    page.wait_for_selector("#login-error:has-text('refused')")
    page.fill("input[name=token]", OPERATOR)
    page.press("input[name=token]", "Enter")
    page.wait_for_selector("#app:not([hidden])")
    # Kept for the tab only, and never in the URL.
    assert page.evaluate("() => sessionStorage.getItem('backupplus.operator_token')") == OPERATOR
    assert page.evaluate("() => localStorage.getItem('backupplus.operator_token')") is None
    assert OPERATOR not in page.url

    # A total outage is urgent (clause 3-3): preselected.
    assert page.locator("#d-priority").input_value() == "urgent"
    # Clause 3-3's items are required: the missing one is named.
    page.fill("#d-contract", number)
    page.fill("#d-serial", f"{number}-PJ")
    page.fill("#d-site", "Aix <script>alert(1)</script>")
    page.fill("#d-contact", "Mme Contact")
    page.click("#declare button[type=submit]")
    page.wait_for_selector("#declare-error:has-text('description')")
    # Not eligible: the reason in words.
    page.fill("#d-description", "The bridge is down")
    page.click("#declare button[type=submit]")
    page.wait_for_selector("#declare-error:has-text('not videoconferencing equipment')")
    page.fill("#d-contract", "NOPE-404")
    page.click("#declare button[type=submit]")
    page.wait_for_selector("#declare-error:has-text('No contract with this number')")

    page.fill("#d-contract", number)
    page.fill("#d-serial", serial)
    page.select_option("#d-priority", "urgent")
    page.click("#declare button[type=submit]")
    page.wait_for_selector("#declare-ok:has-text('Outage declared')")
    outage = next(o for o in server.ok("GET", "/v1/outages") if o["contract"] == number)
    card = page.locator(f"#outage-{outage['id']}")
    card.wait_for()
    assert f"{number} · {serial}" in card.locator(".o-title").text_content()
    assert "<script>" in card.locator(".o-ticket").text_content()  # shown as text
    assert card.locator(".o-ack dd").text_content().count("in ") >= 1
    assert card.locator(".o-video-label").text_content() == "Video 0 / 10"

    # Live usage: a participant admitted through the API shows up within a poll or two.
    card.locator(".o-confs summary").click()
    card.locator(".o-new-conf input[name=title]").fill("Crisis room")
    card.locator(".o-new-conf button[type=submit]").click()
    url_input = card.locator(".c-url")
    url_input.wait_for()
    join_url = url_input.input_value()
    assert join_url.startswith(server.base + "/join/")
    conf = server.ok("GET", f"/v1/outages/{outage['id']}/conferences")[0]
    pid = server.ok(
        "POST",
        f"/v1/conferences/{conf['id']}/participants",
        {"display_name": "Gina", "kind": "video"},
        token=conf["join_token"],
    )["id"]
    card.locator(".o-video-label:has-text('Video 1 / 10')").wait_for(timeout=5000)
    card.locator("tr[data-participant] td:has-text('Gina')").wait_for(timeout=5000)

    # An outage reported days ago: its SLA deadlines are overdue and highlighted.
    old_number, old_serial = _contract(server)
    reported = _overdue_reported_at().isoformat()
    late = server.ok(
        "POST",
        "/v1/outages",
        {
            "contract": old_number,
            "serial": old_serial,
            "reported_at": reported,
            "ticket": {"priority": "medium", "site": "Lyon", "contact": "Mme Retard", "description": "No picture"},
        },
    )
    late_card = page.locator(f"#outage-{late['id']}")
    late_card.locator(".o-restore.overdue").wait_for(timeout=5000)
    assert "OVERDUE by" in late_card.locator(".o-restore dd").text_content()
    assert late_card.locator(".o-ack").get_attribute("class").split().count("overdue") == 1
    assert card.locator(".o-restore.overdue").count() == 0
    server.ok("POST", f"/v1/outages/{late['id']}/restore")

    # Plan an end (typed in Paris time).
    paris = ZoneInfo("Europe/Paris")
    new_end = (datetime.now(UTC) + timedelta(days=2)).astimezone(paris)
    new_end = new_end.replace(second=0, microsecond=0)
    card.locator(".o-extend input").fill(new_end.strftime("%Y-%m-%dT%H:%M"))
    card.locator(".o-extend button[type=submit]").click()
    card.locator(".o-error:has-text('Planned end set')").wait_for(timeout=5000)
    got = datetime.fromisoformat(server.ok("GET", f"/v1/outages/{outage['id']}")["window_ends_at"])
    assert got == new_end, (got, new_end)

    # Remove the participant, then restore (with its confirmation).
    card.locator(f"tr[data-participant='{pid}'] button").click()
    card.locator(".o-video-label:has-text('Video 0 / 10')").wait_for(timeout=5000)
    card.locator(".o-restore-btn").click()
    card.locator(".o-restore-yes").click()
    card.locator(".o-state:has-text('Restored')").wait_for(timeout=5000)
    assert server.ok("GET", f"/v1/outages/{outage['id']}")["state"] == "restored"
    assert card.locator(".o-actions").is_hidden()

    # A new tab (new context) asks for the token again.
    other = pages.open(server.base + "/console")
    other.wait_for_selector("input[name=token]")
    assert other.locator("#app").is_hidden()


def test_removed_by_the_hotline_stays_out(server: Api, conference: dict[str, Any], pages: Pages) -> None:
    page = pages.open(conference["join_url"] + "?name=Hal&kind=audio&autojoin=1")
    _state(page, "connected")
    conf = server.ok("GET", f"/v1/conferences/{conference['id']}")  # the operator sees ids
    (hal,) = conf["participants"]
    assert server.call("DELETE", f"/v1/participants/{hal['id']}")[0] == 204
    page.wait_for_selector("#status:has-text('You were disconnected')", timeout=20000)
    assert page.evaluate("() => document.body.dataset.state") == "idle"
    time.sleep(1)
    conf = server.ok("GET", f"/v1/conferences/{conference['id']}", token=conference["token"])
    assert conf["participants"] == []  # not re-admitted behind the hotline's back


def test_restore_ends_a_video_call_for_everyone(server: Api, conference: dict[str, Any], pages: Pages) -> None:
    """Two video participants in a call when the hotline restores: both pages say "ended" (their
    media closes first, and the reconnection that follows must not read as a removal)."""
    both = [pages.open(conference["join_url"] + f"?name={n}&kind=video&autojoin=1") for n in ("Eve", "Finn")]
    for page in both:
        _state(page, "connected")
        page.evaluate(RECORD_STATES_JS)
    server.ok("POST", f"/v1/outages/{conference['outage']}/restore")
    for page in both:
        _state(page, "ended", timeout=10)
        assert "idle" not in page.evaluate("() => window.bpStates")
        assert "your own video system is working again" in page.locator("#ended").text_content()


# ------------------------------------------------------------------------------------------ console flows
def _console(pages: Pages, server: Api, locale: str = "en-GB") -> Any:
    """A signed-in console, its live feed (server-sent events) up."""
    page = pages.open(server.base + "/console", locale=locale)
    page.fill("input[name=token]", OPERATOR)
    page.press("input[name=token]", "Enter")
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("body[data-live=sse]", timeout=10000)
    return page


def _declare_late(server: Api) -> dict[str, Any]:
    """An outage called in days ago: its acknowledge and restore deadlines have passed."""
    number, serial = _contract(server)
    return server.ok("POST", "/v1/outages", {
        "contract": number, "serial": serial, "reported_at": _overdue_reported_at().isoformat(),
        "ticket": {"priority": "medium", "site": "Lyon", "contact": "Mme Retard", "description": "No picture"},
    })


def test_console_changes_within_a_second_of_a_decision(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    page = _console(pages, server)
    card = page.locator(f"#outage-{conference['outage']}")
    card.locator(".o-video-label:has-text('Video 0 / 10')").wait_for(timeout=5000)
    card.locator(".o-log li:has-text('conference created')").wait_for(timeout=5000)  # the backlog
    started = time.monotonic()
    server.ok("POST", f"/v1/conferences/{conference['id']}/participants",
              {"display_name": "Claire", "kind": "video"}, token=conference["token"])
    # Decisions in words come only from the event stream (polling shows none), within a second.
    card.locator(".o-log li:has-text('Claire joined (video)')").wait_for(timeout=1000)
    card.locator(".o-video-label:has-text('Video 1 / 10')").wait_for(timeout=1000)
    print(f"console updated {1000 * (time.monotonic() - started):.0f} ms after the admission was answered")
    line = card.locator(".o-log li").first.text_content() or ""
    assert line[:2].isdigit() and line[2] == ":" and line.endswith("Claire joined (video)"), line
    _fill(server, conference, "video", 9)
    status, problem, _ = server.call("POST", f"/v1/conferences/{conference['id']}/participants",
                                     {"display_name": "Zoé", "kind": "video", "downgrade": False},
                                     token=conference["token"])
    assert status == 409, problem
    card.locator(".o-log li:has-text('Zoé refused: video full')").wait_for(timeout=1000)
    card.locator(".o-video-label:has-text('Video 10 / 10')").wait_for(timeout=1000)
    assert card.locator(".o-log li").count() == 5  # the last five decisions
    assert page.evaluate("() => document.body.dataset.live") == "sse"


def test_console_falls_back_to_polling_without_the_event_stream(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    page = pages.open()
    page.route("**/v1/events?*", lambda route: route.abort())  # the stream cannot be had
    page.goto(server.base + "/console")
    page.fill("input[name=token]", OPERATOR)
    page.press("input[name=token]", "Enter")
    page.wait_for_selector("body[data-live=polling]", timeout=15000)
    assert "refreshing every 2 s" in (page.locator("#live").text_content() or "")
    card = page.locator(f"#outage-{conference['outage']}")
    server.ok("POST", f"/v1/conferences/{conference['id']}/participants",
              {"display_name": "Polly", "kind": "audio"}, token=conference["token"])
    card.locator(".o-audio-label:has-text('Audio 1 / 8')").wait_for(timeout=5000)


def test_console_acknowledge_overdue_and_planned_end(server: Api, pages: Pages) -> None:
    first, second = _declare_late(server), _declare_late(server)
    page = _console(pages, server)
    one, two = page.locator(f"#outage-{first['id']}"), page.locator(f"#outage-{second['id']}")
    for card in (one, two):
        card.locator(".o-ack.overdue").wait_for(timeout=5000)
        assert "OVERDUE by" in (card.locator(".o-ack dd").text_content() or "")
        assert card.locator(".o-restore-overdue").is_visible()  # restore_overdue: the red mark
        assert card.locator(".o-window dd").text_content() == "No planned end — until restored"
    # Acknowledge without a name: asked for it; with one: recorded, and OVERDUE no more on that card only.
    one.locator(".o-ack-form button").click()
    one.locator(".o-error:has-text('Type your name')").wait_for()
    one.locator(".o-ack-form input[name=by]").fill("Claire")
    one.locator(".o-ack-form button").click()
    one.locator(".o-acked:has-text('by Claire, after the deadline')").wait_for(timeout=5000)
    assert one.locator(".o-ack.overdue").count() == 0 and one.locator(".o-ack-form").is_hidden()
    assert "missed" in (one.locator(".o-ack dd").text_content() or "")
    assert one.locator(".o-restore-overdue").is_visible()  # the restore is still overdue
    assert two.locator(".o-ack.overdue").count() == 1
    assert two.locator(".o-ack-form input[name=by]").input_value() == "Claire"  # kept for the tab
    got = server.ok("GET", f"/v1/outages/{first['id']}")
    assert got["acknowledged_by"] == "Claire" and got["ack_met"] is False
    one.locator(".o-log li:has-text('Claire acknowledged the outage')").wait_for(timeout=2000)
    # A planned end, typed in Paris time, then cleared.
    paris = ZoneInfo("Europe/Paris")
    end = (datetime.now(UTC) + timedelta(hours=30)).astimezone(paris).replace(second=0, microsecond=0)
    one.locator(".o-extend input").fill(end.strftime("%Y-%m-%dT%H:%M"))
    one.locator(".o-extend button[type=submit]").click()
    one.locator(".o-error:has-text('Planned end set')").wait_for(timeout=5000)
    assert datetime.fromisoformat(server.ok("GET", f"/v1/outages/{first['id']}")["window_ends_at"]) == end
    assert "No planned end" not in (one.locator(".o-window dd").text_content() or "")
    one.locator(".o-log li:has-text('planned end set for')").wait_for(timeout=2000)
    _shot(page, "console.png", full_page=True)
    one.locator(".o-plan-clear").click()
    one.locator(".o-window dd:has-text('No planned end — until restored')").wait_for(timeout=5000)
    assert server.ok("GET", f"/v1/outages/{first['id']}")["window_ends_at"] is None
    assert one.locator(".o-plan-clear").is_hidden()
    # Restored: the card says how it ended.
    one.locator(".o-restore-btn").click()
    one.locator(".o-restore-yes").click()
    one.locator(".o-ended:has-text('Restored on')").wait_for(timeout=5000)
    assert one.locator(".o-restore-overdue").is_hidden()
    server.ok("POST", f"/v1/outages/{second['id']}/restore")


def test_console_conference_priority_and_max(server: Api, conference: dict[str, Any], pages: Pages) -> None:
    page = _console(pages, server)
    card = page.locator(f"#outage-{conference['outage']}")
    card.locator(".o-confs summary").click()
    conf = card.locator(f"li[data-conference='{conference['id']}']")
    conf.locator(".c-ports:has-text('holds 0 of 10 video and 0 of 8 audio ports')").wait_for(timeout=5000)
    assert "max none video, none audio" in (conf.locator(".c-ports").text_content() or "")
    edit = conf.locator(".c-edit")
    assert edit.locator("input[name=priority]").input_value() == "5"
    # More than the outage has: refused with the field named, nothing changed.
    edit.locator("input[name=max_video]").fill("11")
    edit.locator("button").click()
    conf.locator(".c-error:has-text('Max video')").wait_for(timeout=5000)
    assert "at most the outage's 10 video ports" in (conf.locator(".c-error").text_content() or "")
    assert edit.locator("input[name=max_video]").get_attribute("aria-invalid") == "true"
    assert server.ok("GET", f"/v1/conferences/{conference['id']}")["max"]["video"] is None
    edit.locator("input[name=max_video]").fill("2")
    edit.locator("input[name=priority]").fill("2")
    edit.locator("button").click()
    conf.locator(".c-saved:has-text('Saved')").wait_for(timeout=5000)
    got = server.ok("GET", f"/v1/conferences/{conference['id']}")
    assert got["max"] == {"video": 2, "audio": None} and got["priority"] == 2
    assert conf.locator(".c-error").is_hidden()
    conf.locator(".c-meta:has-text('priority 2')").wait_for(timeout=5000)
    for name in ("Ann", "Bob"):
        server.ok("POST", f"/v1/conferences/{conference['id']}/participants",
                  {"display_name": name, "kind": "video", "downgrade": False}, token=conference["token"])
    conf.locator(".c-ports:has-text('holds 2 of 10 video')").wait_for(timeout=3000)
    status, _, _ = server.call("POST", f"/v1/conferences/{conference['id']}/participants",
                               {"display_name": "Cid", "kind": "video", "downgrade": False},
                               token=conference["token"])
    assert status == 409
    card.locator(".o-log li:has-text(\"Cid refused: the conference's video max is reached\")").wait_for(timeout=3000)


def _intake(page: Any, contract: str, serial: str, description: str, **more: str) -> None:
    """Fills the declare form as the hotline would (Marseille, Dr Martin) and submits it."""
    fields = {"contract": contract, "serial": serial, "site": "Marseille", "contact": "Dr Martin",
              "description": description, **more}
    for name, value in fields.items():
        page.fill(f"#d-{name}", value)
    page.click("#declare button[type=submit]")


def test_console_intake_tickets_and_renewals(server: Api, pages: Pages) -> None:
    today = date.today()
    number = f"RN-{os.getpid()}-{next(_contract_numbers)}"
    start = today.replace(year=today.year - 3) + timedelta(days=30)  # a 3-year term ending in ~30 days
    server.ok("PUT", f"/v1/contracts/{number}", {
        "number": number, "client": {"company": "Clinique du Parc"}, "start_date": str(start), "term_years": 3,
        "status": "active", "equipment": [
            {"serial": f"{number}-MCU", "brand": "Poly", "model": "RMX 1800", "kind": "video_bridge",
             "warranty_until": str(today + timedelta(days=400))},
            {"serial": f"{number}-PJ", "brand": "Epson", "model": "EB-L", "kind": "projector",
             "warranty_until": str(today + timedelta(days=400))}]})
    page = _console(pages, server)
    page.locator(f"#renewal-list li[data-contract='{number}']:has-text('Clinique du Parc')").wait_for(timeout=5000)
    # The contract's company and the equipment's model are what the broker will take unless typed.
    page.fill("#d-contract", number)
    page.wait_for_function("() => document.getElementById('d-company').placeholder === 'Clinique du Parc'")
    page.fill("#d-serial", f"{number}-MCU")
    page.wait_for_function("() => document.getElementById('d-model').placeholder === 'Poly RMX 1800'")
    page.click("#declare button[type=submit]")
    page.wait_for_selector("#declare-error:has-text('please fill in: Site, Contact, Description')")
    assert page.locator("#d-site").get_attribute("aria-invalid") == "true"
    _intake(page, number, f"{number}-MCU", "Bridge dead since 8:00", company="Clinique des Pins")
    page.wait_for_selector("#declare-ok:has-text('Outage declared')")
    mismatch = page.locator("#declare-mismatch").text_content() or ""
    assert "Clinique des Pins" in mismatch and "differs from the contract's" in mismatch and "Clinique du Parc" in mismatch
    # A refused request gets its ticket too, shown with the refusal.
    _intake(page, number, f"{number}-PJ", "Projector")
    page.wait_for_selector("#declare-error:has-text('refused')")
    error = page.locator("#declare-error").text_content() or ""
    assert "not videoconferencing equipment" in error, error
    refused = error.split("Ticket ", 1)[1].split(":", 1)[0]
    assert refused.startswith("BP-"), error
    # The ticket search: a number, then a contract (newest first).
    page.fill("#t-query", refused)
    page.press("#t-query", "Enter")
    item = page.locator(f"#ticket-results li[data-ticket='{refused}']")
    item.wait_for(timeout=5000)
    assert item.get_attribute("data-outcome") == "refused"
    assert "Refused: Not eligible: this equipment is not videoconferencing" in (item.text_content() or "")
    page.fill("#t-query", number)
    page.press("#t-query", "Enter")
    page.wait_for_selector("#ticket-results li[data-outcome=outage]")
    listed = page.eval_on_selector_all("#ticket-results li", "els => els.map(e => e.dataset.ticket)")
    assert listed[0] == refused and len(listed) == 2, listed
    outage = next(o for o in server.ok("GET", "/v1/outages?state=active") if o["contract"] == number)
    assert page.locator("#ticket-results li[data-outcome=outage]").text_content().count(outage["id"]) == 1
    server.ok("POST", f"/v1/outages/{outage['id']}/restore")


def test_preempted_participant_is_told_why_and_does_not_rejoin(
    server: Api, conference: dict[str, Any], pages: Pages
) -> None:
    """Two conferences of different importance filling video: the less important one's newest
    participant (a real page) loses its place to the more important one, and stays out."""
    board = server.ok("POST", f"/v1/outages/{conference['outage']}/conferences", {"title": "Board", "priority": 1})
    _fill(server, conference, "video", 9)  # priority 5 (the default)
    page = pages.open(conference["join_url"] + "?name=Lou&kind=video&autojoin=1")
    _state(page, "connected")
    (lou,) = [p for p in server.ok("GET", f"/v1/conferences/{conference['id']}")["participants"]
              if p["display_name"] == "Lou"]
    taken = server.ok("POST", f"/v1/conferences/{board['id']}/participants",
                      {"display_name": "Chair", "kind": "video", "downgrade": False}, token=board["join_token"])
    assert taken["preempted"] is True and taken["kind"] == "video"
    _state(page, "preempted", timeout=10)
    assert page.locator("#status").text_content() == "A more important meeting of your company needed your place."
    assert "given to a more important meeting of your company" in (page.locator("#preempted-text").text_content() or "")
    assert page.locator("#preempted-phone").text_content() == HOTLINE
    assert page.locator("#rejoin").is_visible()
    assert server.ok("GET", f"/v1/participants/{lou['id']}")["state"] == "preempted"
    page.evaluate(RECORD_STATES_JS)
    time.sleep(4)  # no automatic rejoin: the page stays out, no new participant named Lou
    assert page.evaluate("() => window.bpStates") == []
    assert page.evaluate("() => document.body.dataset.state") == "preempted"
    names = [p["display_name"] for p in server.ok("GET", f"/v1/conferences/{conference['id']}")["participants"]]
    assert "Lou" not in names


def test_reload_reconnects_as_the_same_participant(server: Api, conference: dict[str, Any], pages: Pages) -> None:
    page = pages.open(conference["join_url"] + "?name=Rita&kind=video&autojoin=1")
    _state(page, "connected")
    before = server.ok("GET", f"/v1/conferences/{conference['id']}")["participants"]
    assert [p["display_name"] for p in before] == ["Rita"]
    page.reload()
    _state(page, "connected", timeout=12)
    page.wait_for_selector("body[data-first-frame]", state="attached", timeout=15000)
    after = server.ok("GET", f"/v1/conferences/{conference['id']}")["participants"]
    assert [(p["id"], p["display_name"]) for p in after] == [(before[0]["id"], "Rita")]  # the same one
    assert server.ok("GET", f"/v1/outages/{conference['outage']}")["in_use"] == {"audio": 0, "video": 1}


def test_planned_end_warns_then_ends_as_planned(server: Api, conference: dict[str, Any], pages: Pages) -> None:
    page = pages.open(conference["join_url"] + "?name=Pam&kind=audio&autojoin=1")
    _state(page, "connected")
    soon = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
    server.ok("POST", f"/v1/outages/{conference['outage']}/extend", {"window_ends_at": soon})
    page.wait_for_selector("#window.soon:has-text('as the hotline planned')", timeout=10000)
    _state(page, "ended", timeout=20)
    assert "ended at the time the hotline planned" in (page.locator("#ended").text_content() or "")
    assert server.ok("GET", f"/v1/outages/{conference['outage']}")["end_reason"] == "planned_end"
