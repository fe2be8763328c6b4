"""Which asyncio event loop the long-running processes use: uvloop when installed, else the stock one."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
CHOICES: tuple[str, ...] = ("auto", "uvloop", "asyncio")


def run(coro: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run`` on uvloop for ``auto`` (when installed) and ``uvloop``, on asyncio's own loop for
    ``asyncio``. uvloop roughly halves the event loop's own cost per socket operation, which is most
    of what a broker does per request and much of what aiortc does per RTP packet."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                coro.close()
                raise SystemExit("uvloop was asked for but is not installed") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)
