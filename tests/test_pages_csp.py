"""No page needs a CSP exception: with ``script-src 'self'`` (no 'unsafe-eval', no 'unsafe-inline') the join
page connects and the console signs in and lists outages in Chromium without one
``securitypolicyviolation`` event or CSP console message, and Playwright's ``wait_for_function`` works."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.test_pages_browser import (  # noqa: F401 - fixtures
    OPERATOR,
    Api,
    _state,
    browser,
    conference,
    server,
)

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.timeout(120)]

# Installed before any page script: every violation of the policy in force is recorded.
RECORD_VIOLATIONS_JS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile});
});
"""


class Watched:
    """A page in its own context, with its CSP violation events and CSP console messages."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(m.text) if _is_csp_message(m.text) else None)
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def violations(self) -> list[dict[str, str]]:
        return list(self.page.evaluate("() => window.cspViolations"))

    def assert_clean(self) -> None:
        assert self.violations() == [] and self.console == [], (self.violations(), self.console)


def _is_csp_message(text: str) -> bool:
    return "Content Security Policy" in text or "Refused to" in text or "unsafe-eval" in text


@contextmanager
def watched(chromium: Any, url: str) -> Iterator[Watched]:
    context = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 860})
    try:
        context.add_init_script(RECORD_VIOLATIONS_JS)
        w = Watched(context.new_page())
        response = w.page.goto(url)
        assert response is not None and "'unsafe-eval'" not in response.headers["content-security-policy"]
        yield w
    finally:
        context.close()


def test_the_join_page_connects_without_a_csp_exception(conference: dict[str, Any], browser: Any) -> None:  # noqa: F811 - fixtures
    with watched(browser, conference["join_url"] + "?name=Csp&kind=video&autojoin=1") as w:
        _state(w.page, "connected")  # wait_for_function, without 'unsafe-eval'
        w.page.wait_for_selector("body[data-first-frame]", state="attached", timeout=15000)
        w.page.click("#lang-switch")
        w.page.wait_for_selector("#join:has-text('Rejoindre')", state="attached")
        w.page.click("#leave")
        _state(w.page, "idle")
        w.assert_clean()


def test_the_console_lists_outages_without_a_csp_exception(
    server: Api, conference: dict[str, Any], browser: Any  # noqa: F811 - fixtures
) -> None:
    with watched(browser, server.base + "/console") as w:
        w.page.fill("input[name=token]", OPERATOR)
        w.page.press("input[name=token]", "Enter")
        w.page.wait_for_selector("#app:not([hidden])")
        card = w.page.locator(f"#outage-{conference['outage']}")
        card.wait_for(timeout=10000)
        card.locator(".o-confs summary").click()
        card.locator(".c-url").wait_for(timeout=10000)
        w.assert_clean()
        # The watch sees what the policy forbids: an inline script and a string evaluated by the page
        # (a string timer: code Playwright evaluates itself is exempt) are refused and recorded.
        w.page.evaluate(
            "() => document.body.append(Object.assign(document.createElement('script'), {textContent: 'window.ran = 1'}))"
        )
        w.page.evaluate("() => setTimeout('window.ran = 2', 0)")
        w.page.wait_for_function("() => window.cspViolations.length >= 2", timeout=5000)
        assert w.page.evaluate("() => window.ran") is None
        blocked = sorted((v["directive"].removesuffix("-elem"), v["blocked"]) for v in w.violations())
        assert blocked == [("script-src", "eval"), ("script-src", "inline")], w.violations()


def test_wait_for_function_needs_a_function_predicate(conference: dict[str, Any], browser: Any) -> None:  # noqa: F811 - fixtures
    """Playwright evaluates a function predicate once (in its own, exempt, evaluation) and then calls it;
    a bare expression it evaluates again with eval() at every poll, which the policy refuses. Outside
    checks wait with ``() => document.body.dataset.state === "..."`` (docs/PAGES.md)."""
    with watched(browser, conference["join_url"] + "?name=Fn&kind=audio") as w:
        w.page.wait_for_function('() => document.body.dataset.state === "idle"', timeout=10000)
        w.page.evaluate("() => setTimeout(() => { document.body.dataset.probe = 'late'; }, 300)")
        w.page.wait_for_function("() => document.body.dataset.probe === 'late'", timeout=5000)
        w.page.evaluate("() => setTimeout(() => { document.body.dataset.probe = 'later'; }, 300)")
        with pytest.raises(playwright_sync.Error, match="unsafe-eval"):
            w.page.wait_for_function("document.body.dataset.probe === 'later'", timeout=5000)
