"""Log output: readable text (the default) or one JSON object a line (``--log-format json``).

Both carry the ids of ``infra.logcontext`` (text: a ``[request_id=… outage=…]`` tail). Both pass the
finished line through :class:`Redactor`, so no token reaches a log whatever a message or a traceback
holds: signed tokens by their shape, configured secrets by their value.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from . import logcontext

REDACTED = "[redacted]"
# Token shapes: signed tokens ("jt1.<payload>.<mac>" and its kin), generated operator tokens, bearer
# headers, Standard Webhooks secrets.
_SHAPES = re.compile(
    r"\b[a-z]{2}\d\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"
    r"|\bbpo_[A-Za-z0-9_-]{8,}"
    r"|(?i:bearer)\s+[^\s\"',]+"
    r"|\bwhsec_[A-Za-z0-9+/=]{8,}"
)
_MIN_SECRET_LEN = 8  # shorter configured values are not searched for (too many false hits)


class Redactor:
    """Replaces token-shaped text and the configured secrets with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literal = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, literal))) if literal else None

    def __call__(self, text: str) -> str:
        if self._literal is not None:
            text = self._literal.sub(REDACTED, text)
        return _SHAPES.sub(REDACTED, text)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={getattr(record, name)}" for name in logcontext.FIELDS if hasattr(record, name))
        if ids:
            head, sep, tail = line.partition("\n")  # the ids go on the message line, before a traceback
            line = f"{head} [{ids}]{sep}{tail}"
        return self._redact(line)


class JsonLineFormatter(JsonFormatter):
    """``{"time", "level", "logger", "message", <ids>…, "exc_info"?}``, one line each."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        self._redact = redact

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        for name in logcontext.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                log_record[name] = value

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def configure(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Sets up the root logger once for a process (replaces handlers a previous call installed)."""
    logcontext.install_record_factory()
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_backupplus", False)]:
        root.removeHandler(old)
    handler._backupplus = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
