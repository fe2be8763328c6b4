"""Log formats: JSON lines carry the request's ids, text stays readable, and no token gets through."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from infra import logcontext, logsetup

JOIN_TOKEN = "jt1.by1hYmNkZWYxMjM0NTYuYzAxMjM0NTY3.q2lYtCj5_SUDnKfl9QJ1fdBi"
OPERATOR_TOKEN = "op-secret-long-enough-2024-0123456789"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield out
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _configure(stream: io.StringIO, fmt: str) -> logging.Logger:
    logsetup.configure("INFO", fmt, secrets=[OPERATOR_TOKEN, "short"])
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_backupplus", False))
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return logging.getLogger("backupplus.test")


def test_json_lines_carry_the_ids_bound_for_the_request(stream: io.StringIO) -> None:
    log = _configure(stream, "json")
    with logcontext.scope(request_id="r-1234abcd", outage="o-0123456789ab"):
        logcontext.bind(ticket="BP-2026-000001", participant="o-0123456789ab.p01234567")
        log.warning("admitted %s", "Ann")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.info("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0] == {**lines[0], "level": "WARNING", "logger": "backupplus.test", "message": "admitted Ann",
                        "request_id": "r-1234abcd", "outage": "o-0123456789ab", "ticket": "BP-2026-000001",
                        "participant": "o-0123456789ab.p01234567"}
    assert "RuntimeError: boom" in lines[1]["exc_info"] and lines[1]["request_id"] == "r-1234abcd"
    assert "request_id" not in lines[2] and "outage" not in lines[2]  # the scope ended


def test_text_stays_readable_with_the_ids_at_the_end(stream: io.StringIO) -> None:
    log = _configure(stream, "text")
    with logcontext.scope(request_id="r-1234abcd", conference="o-0123456789ab.c01234567"):
        log.warning("capacity exhausted on %s", "video")
    log.warning("no ids here")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(
        "WARNING backupplus.test: capacity exhausted on video [request_id=r-1234abcd conference=o-0123456789ab.c01234567]"
    )
    assert second.endswith("WARNING backupplus.test: no ids here")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_token_reaches_the_log(stream: io.StringIO, fmt: str) -> None:
    log = _configure(stream, fmt)
    webhook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    log.warning("GET /join/%s", JOIN_TOKEN)
    log.warning("Authorization: Bearer %s", OPERATOR_TOKEN)
    log.warning("configured with %s and token %s", webhook_secret, "bpo_x3yT0mZq1c9bWf8RkLpQ2sVd")
    try:
        raise ValueError(f"bad token {OPERATOR_TOKEN}")
    except ValueError:
        log.exception("in a traceback too")
    log.warning("a short configured value is left alone: short")
    text = stream.getvalue()
    for secret in (JOIN_TOKEN, OPERATOR_TOKEN, webhook_secret, "bpo_x3yT0mZq1c9bWf8RkLpQ2sVd"):
        assert secret not in text
    assert text.count("[redacted]") == 5
    assert "GET /join/[redacted]" in text and "alone: short" in text
