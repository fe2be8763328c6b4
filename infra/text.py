"""Redis replies as text, whichever way the client decodes them."""

from __future__ import annotations

from typing import Any, overload


@overload
def as_str(value: None) -> None: ...
@overload
def as_str(value: Any) -> str: ...
def as_str(value: Any) -> str | None:
    """``bytes`` decoded as UTF-8, ``None`` kept, anything else through ``str``."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
