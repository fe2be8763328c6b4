"""How the tests and benchmarks drive Debian's Chromium (``playwright install`` cannot download here)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # This machine's network is closed: without these, Chromium keeps dialling out and failing.
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def require_chromium() -> str:
    """The executable, or a clear failure (never a silent skip) when the Debian package is missing."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make setup-test` installs the Debian package chromium")
    return CHROMIUM
