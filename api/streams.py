"""The open event streams of one broker process: a cap on how many, and the signal that ends them
all when the app stops (``api.livefeed``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from . import problems
from .problems import Problem


class StreamRegistry:
    """The open streams of this process: a cap, and the signal that ends them all at shutdown."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        self.stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.stopping.is_set():
            raise Problem(problems.TOO_MANY_STREAMS, "This broker is stopping", headers={"Retry-After": "2"})
        if self.open >= self.cap:
            raise Problem(problems.TOO_MANY_STREAMS, f"At most {self.cap} live streams per broker process",
                          headers={"Retry-After": "5"})
        self.open += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.open -= 1
            if self.open == 0:
                self._idle.set()

    async def close_all(self, timeout: float) -> None:
        """Asks every stream to end (each says ``close`` to its client) and waits for them, bounded."""
        self.stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
