"""The ids a log line carries: request, outage, ticket, conference, participant.

They live in contextvars, set by the API's middleware (request id, ids in the path) and by the broker
(ids it learns while deciding), so any line logged while serving a request says what it was about.
A record factory copies them onto every ``LogRecord`` when it is made, whatever handler formats it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

FIELDS = ("request_id", "outage", "ticket", "conference", "participant")
_VARS: dict[str, ContextVar[str | None]] = {name: ContextVar(f"backupplus_log_{name}", default=None) for name in FIELDS}


def bind(**ids: str | None) -> None:
    """Sets the given ids (None leaves one as it is) for the rest of the current context."""
    for name, value in ids.items():
        if value is not None:
            _VARS[name].set(str(value))


def current() -> dict[str, str]:
    """The ids set now."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


def request_id() -> str | None:
    return _VARS["request_id"].get()


@contextmanager
def scope(**ids: str | None) -> Iterator[None]:
    """Binds ``ids`` for the block; on exit every id is back to what it was before, those bound inside
    included (aiohttp runs each request in a task of its own, so this matters to other callers: a
    background loop handling one event after another)."""
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = [
        (var, var.set(ids[name] if ids.get(name) is not None else var.get())) for name, var in _VARS.items()
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


_installed = False


def install_record_factory() -> None:
    """Every LogRecord made from now on carries the current ids as attributes (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        for name, var in _VARS.items():
            value = var.get()
            if value is not None:
                setattr(record, name, value)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
