"""The page handlers (join page, console, static files) against a minimal aiohttp app: no Redis."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.appkeys import KEYS, SETTINGS
from api.auth import sign_join_token
from api.pages import CSP, setup_pages
from broker.contracts import REASON_CODES
from infra.settings import Settings
from quotas.secret import KeyRing, KeyStore

SECRET_BYTES = b"s" * 32


@pytest.fixture
async def client():  # type: ignore[no-untyped-def]
    app = web.Application()
    app[SETTINGS] = Settings(hotline_phone='+33 1 23 <b>"45"</b>')
    app[KEYS] = KeyStore(None, KeyRing.single(SECRET_BYTES))  # type: ignore[arg-type]  # no Redis: never reloaded
    setup_pages(app)
    async with TestClient(TestServer(app)) as c:
        yield c


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _parse(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    return p


def _assert_strict_csp(resp) -> None:  # type: ignore[no-untyped-def]
    csp = resp.headers["Content-Security-Policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no 'unsafe-eval' nor 'unsafe-inline'
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["media-src"] == "'self' blob: mediastream:"
    assert directives["default-src"] == "'none'"
    assert "unsafe-inline" not in csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def _assert_no_inline(text: str) -> None:
    parsed = _parse(text)
    for tag, attrs in parsed.tags:
        assert "style" not in attrs, f"inline style on <{tag}>"
        assert not any(a.startswith("on") for a in attrs), f"inline handler on <{tag}>"
        if tag == "script":
            assert attrs.get("src", "").startswith("/static/"), "inline <script>"
    assert "<style" not in text


async def test_join_page_valid_token(client) -> None:  # type: ignore[no-untyped-def]
    token = sign_join_token(KeyRing.single(SECRET_BYTES).signing_key("join"), "o-0123456789ab.c01234567")
    resp = await client.get(f"/join/{token}?name=Ann&kind=audio&autojoin=1")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    _assert_strict_csp(resp)
    assert "no-store" in resp.headers["Cache-Control"]
    text = await resp.text()
    _assert_no_inline(text)
    body = next(attrs for tag, attrs in _parse(text).tags if tag == "body")
    assert body["data-state"] == "idle"
    assert body["data-conference"] == "o-0123456789ab.c01234567"
    # The phone number from configuration is escaped, and decodes back to itself.
    assert body["data-hotline"] == '+33 1 23 <b>"45"</b>'
    assert "<b>" not in text
    assert body["data-video-ports"] == "10" and body["data-max-video-height"] == "480"
    # The token is not copied into the page: JS reads it from location.pathname.
    assert token not in text
    # The remote <video> comes before the preview so that querySelector('video') is the conference.
    videos = [a.get("id") for tag, a in _parse(text).tags if tag == "video"]
    assert videos == ["remote", "preview"]
    # Every form control has a label.
    ids_with_label = {a.get("for") for tag, a in _parse(text).tags if tag == "label"}
    for tag, attrs in _parse(text).tags:
        if tag in ("input", "select") and attrs.get("type") != "radio":
            assert attrs.get("id") in ids_with_label, attrs


@pytest.mark.parametrize("token", ["nope", "jt1.abc.def", "x" * 2000, "jt1.%00.%00"])
async def test_join_page_invalid_token_is_friendly_404(client, token: str) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get(f"/join/{token}")
    assert resp.status == 404
    assert resp.content_type == "text/html"
    _assert_strict_csp(resp)
    text = await resp.text()
    _assert_no_inline(text)
    assert "not valid" in text and "pas valide" in text
    assert "&lt;b&gt;" in text  # hotline phone escaped
    assert token[:40] not in text  # never echoed


async def test_token_signed_with_another_secret_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    token = sign_join_token(b"other" * 8, "o-0123456789ab.c01234567")
    resp = await client.get(f"/join/{token}")
    assert resp.status == 404


async def test_console_page(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/console")
    assert resp.status == 200
    _assert_strict_csp(resp)
    assert "no-store" in resp.headers["Cache-Control"]
    text = await resp.text()
    _assert_no_inline(text)
    tags = _parse(text).tags
    token_inputs = [a for tag, a in tags if tag == "input" and a.get("name") == "token"]
    assert len(token_inputs) == 1 and token_inputs[0]["type"] == "password"
    assert any(tag == "script" and a.get("src") == "/static/console.js" for tag, a in tags)


@pytest.mark.parametrize(
    "path,ctype",
    [
        ("/static/join.js", "text/javascript"),
        ("/static/console.js", "text/javascript"),
        ("/static/i18n.js", "text/javascript"),
        ("/static/api.js", "text/javascript"),
        ("/static/common.css", "text/css"),
        ("/static/join.css", "text/css"),
        ("/static/console.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_files(client, path: str, ctype: str) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.content_type in (ctype, "application/javascript")
    _assert_strict_csp(resp)
    assert resp.headers["Cache-Control"] == "no-cache"


async def test_static_no_traversal_no_index(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/static/")).status in (403, 404)
    assert (await client.get("/static/../pages.py")).status in (403, 404)
    assert (await client.get("/static/%2e%2e/pages.py")).status in (403, 404)


def test_scripts_never_use_innerhtml_or_eval() -> None:
    from api.pages import STATIC_DIR

    for js in STATIC_DIR.glob("*.js"):
        src = js.read_text()
        for bad in (
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert bad not in src, f"{bad} in {js.name}"
        # No token ever goes into a URL the scripts build.
        assert not re.search(r"[?&]token=", src), js.name


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_palette_meets_wcag_aa() -> None:
    from api.pages import STATIC_DIR

    css = (STATIC_DIR / "common.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [
        ("fg", "bg"),
        ("fg", "panel"),
        ("muted", "panel"),
        ("muted", "bg"),
        ("primary", "panel"),
        ("ok", "panel"),
        ("warn-fg", "warn-bg"),
        ("error-fg", "error-bg"),
    ]
    for fg, bg in pairs:
        assert _contrast(var[fg], var[bg]) >= 4.5, (fg, bg, _contrast(var[fg], var[bg]))
    # White text on the coloured buttons and the overdue highlight.
    for bg in ("primary", "primary-hover", "danger"):
        assert _contrast("#ffffff", var[bg]) >= 4.5, bg


def _i18n_tables() -> dict[str, set[str]]:
    from api.pages import STATIC_DIR

    src = (STATIC_DIR / "i18n.js").read_text()
    en_start, fr_start = src.index("\n  en: {"), src.index("\n  fr: {")
    end = src.index("\n};", fr_start)
    key = re.compile(r"^\s{4}([a-z0-9_]+):", re.MULTILINE)
    return {"en": set(key.findall(src[en_start:fr_start])), "fr": set(key.findall(src[fr_start:end]))}


def test_every_text_exists_in_french_and_english() -> None:
    from api.pages import STATIC_DIR, render_console, render_join

    tables = _i18n_tables()
    assert tables["en"] == tables["fr"], tables["en"] ^ tables["fr"]
    used: set[str] = set()
    for html_text in (render_join("c", "1", 8, 10, 480), render_console("1")):
        used |= set(re.findall(r'data-i18n(?:-aria-label|-placeholder)?="([a-z0-9_]+)"', html_text))
    for js in ("join.js", "console.js"):
        src = (STATIC_DIR / js).read_text()
        used |= set(re.findall(r'(?:\bt|status|notice|deviceError)\(\s*"([a-z0-9_]+)"', src))
        used |= set(re.findall(r'(?:setText|show)\([^,;]+?,\s*"([a-z0-9_]+)"', src))
        for a, b in re.findall(r'\?\s*"([a-z0-9_]+)"\s*:\s*"([a-z0-9_]+)"', src):
            used |= {a, b}
    used -= {
        "audio",
        "video",
        "idle",
        "joining",
        "connected",
        "refused",
        "ended",
        "readmit",
        "retry",
        "fatal",
    }
    missing = used - tables["en"]
    assert not missing, missing
    # Codes the console turns into words.
    for reason in REASON_CODES:
        assert f"reason_{reason}" in tables["en"]
    for code in (
        "contract_not_found",
        "outage_already_active",
        "outage_not_active",
        "reserve_exceeds_capacity",
    ):
        assert f"err_{code}" in tables["en"]
