"""Settings: every field can come from BACKUPPLUS_<FIELD>, flags override, bad values are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import Settings


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = "a" * 32, "b" * 40
    monkeypatch.setenv("BACKUPPLUS_OPERATOR_TOKENS", f" {a}, {b} ,,")
    monkeypatch.setenv("BACKUPPLUS_ADMISSION_RATE_BURST", "3")
    monkeypatch.setenv("BACKUPPLUS_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("BACKUPPLUS_PORT", "9000")
    s = Settings.from_env(port=None, host="0.0.0.0")
    assert s.operator_tokens == frozenset({a, b})
    assert s.admission_rate_burst == 3 and s.port == 9000 and s.host == "0.0.0.0"
    assert s.base_url == "http://0.0.0.0:9000"
    assert Settings.from_env(port=9100).port == 9100


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPPLUS_AUDIO_PORTS", "eight")
    with pytest.raises(ValidationError):
        Settings.from_env()


def test_short_operator_tokens_are_refused_without_being_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPPLUS_OPERATOR_TOKENS", "op-secret-123," + "x" * 32)
    with pytest.raises(ValidationError) as caught:
        Settings.from_env()
    text = str(caught.value)
    assert "shorter than 32 characters" in text and "length 13" in text
    assert "op-secret-123" not in text


def test_operator_token_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    digest = hashlib.sha256(b"t" * 40).hexdigest()
    monkeypatch.setenv("BACKUPPLUS_OPERATOR_TOKEN_HASHES", f"{digest.upper()}, ")
    s = Settings.from_env()
    assert s.operator_token_hashes == frozenset({digest}) and s.operator_digests == frozenset({digest})
    monkeypatch.setenv("BACKUPPLUS_OPERATOR_TOKEN_HASHES", "not-a-digest")
    with pytest.raises(ValidationError, match="SHA-256"):
        Settings.from_env()
