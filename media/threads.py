"""The room's worker threads: started with the event loop they deliver to, named for ``top -H``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


def name_os_thread(name: str) -> None:
    """Give the calling thread an OS-visible name (``top -H``, /proc/*/task/*/comm); best effort."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def start_worker(target: Callable[[asyncio.AbstractEventLoop], None], name: str) -> threading.Thread:
    """A daemon thread running ``target(loop)``, handed the running event loop it delivers to."""
    thread = threading.Thread(target=target, args=(asyncio.get_running_loop(),), name=name, daemon=True)
    thread.start()
    return thread
