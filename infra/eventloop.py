"""Which asyncio event loop the long-running processes use: uvloop when installed (``auto``), else the
stock one; ``--loop asyncio`` or ``BACKUPPLUS_LOOP=asyncio`` forces the stock loop.

Measured here (docs/): the admission path alone is as fast on either loop; under the mixed load of
`backupplus loadtest` (brokers, media node and load generators on two cores) uvloop gave the lower
admission tail, and the media node used a little less CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES: tuple[str, ...] = ("auto", "uvloop", "asyncio")
DEFAULT = "auto"


def run(coro: Coroutine[Any, Any, T], loop: str = DEFAULT) -> T:
    """``asyncio.run`` on the chosen loop."""
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
