"""Bearer tokens: operator tokens from configuration, HMAC-signed join tokens bound to one conference,
and participant tokens bound to one participant.

A join or participant token carries only its id and a signature; it stays valid exactly as long as
what it names is live (checked at each use), so restore, deletion or leaving revokes it without a
revocation list. Who may see what (API.md): a caller gets 404 for what it may not see at all, whether
it exists or not, and 403 for what it may see but not do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from quotas.secret import KeyRing

from . import problems
from .problems import Problem

_JOIN_PREFIX = "jt1"
_PARTICIPANT_PREFIX = "pt1"
_STREAM_PREFIX = "st1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


OPERATOR_TOKEN_PREFIX = "bpo_"


def new_operator_token() -> str:
    """A random operator token. The prefix makes it recognisable (secret scanners, logs) and keeps it
    from starting with "-", which command lines would read as an option (``--token -abc…`` fails)."""
    return OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(24)


def _sign(key: bytes, prefix: str, subject: str) -> str:
    payload = _b64(subject.encode())
    mac = hmac.new(key, f"{prefix}.{payload}".encode(), hashlib.sha256).digest()[:18]
    return f"{prefix}.{payload}.{_b64(mac)}"


def _keys(keys: bytes | Sequence[bytes]) -> Sequence[bytes]:
    return [keys] if isinstance(keys, bytes) else keys


def _verify(keys: bytes | Sequence[bytes], prefix: str, token: str) -> str | None:
    """The subject when one of ``keys`` (the ring's accepted keys of the purpose) signed the token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != prefix or len(token) > 256:
        return None
    try:
        mac = _unb64(parts[2])
        subject = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    good = False
    for key in _keys(keys):  # every accepted key, always: no early exit to time
        expected = hmac.new(key, f"{prefix}.{parts[1]}".encode(), hashlib.sha256).digest()[:18]
        good |= hmac.compare_digest(mac, expected)
    return subject if good else None


def sign_join_token(key: bytes, conference_id: str) -> str:
    """``key``: the ring's signing key of purpose "join"."""
    return _sign(key, _JOIN_PREFIX, conference_id)


def verify_join_token(keys: bytes | Sequence[bytes], token: str) -> str | None:
    """The conference id the token is for, or None when it is not a genuine join token."""
    return _verify(keys, _JOIN_PREFIX, token)


def sign_participant_token(key: bytes, participant_id: str) -> str:
    """``key``: the ring's signing key of purpose "participant"."""
    return _sign(key, _PARTICIPANT_PREFIX, participant_id)


def verify_participant_token(keys: bytes | Sequence[bytes], token: str) -> str | None:
    """The participant id the token is for, or None when it is not a genuine participant token."""
    return _verify(keys, _PARTICIPANT_PREFIX, token)


def token_digest(token: str) -> str:
    """SHA-256 hex of an operator token: what BACKUPPLUS_OPERATOR_TOKEN_HASHES holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def _operator_fingerprint(key: bytes, digest: str) -> str:
    """Names an operator token (by its SHA-256) inside a stream ticket without revealing it."""
    return _b64(hmac.new(key, b"op:" + digest.encode(), hashlib.sha256).digest()[:9])


def sign_stream_ticket(key: bytes, operator_token: str, expires_ms: int) -> str:
    """A stream ticket: lets an EventSource (which cannot send an Authorization header) open the live
    feed until ``expires_ms``, for as long as the operator token that asked for it stays configured.
    It is good for nothing else, so the operator token itself never goes into a URL."""
    fingerprint = _operator_fingerprint(key, token_digest(operator_token))
    subject = f"{int(expires_ms)}.{fingerprint}.{secrets.token_urlsafe(6)}"
    return _sign(key, _STREAM_PREFIX, subject)


def verify_stream_ticket(
    keys: bytes | Sequence[bytes], ticket: str, operator_digests: frozenset[str], now_ms: int
) -> bool:
    """``operator_digests``: the SHA-256 hex of every configured operator token."""
    subject = _verify(keys, _STREAM_PREFIX, ticket)
    if subject is None:
        return False
    expires, _, rest = subject.partition(".")
    fingerprint = rest.partition(".")[0]
    if not expires.isdigit() or int(expires) <= now_ms:
        return False
    return any(
        hmac.compare_digest(fingerprint, _operator_fingerprint(key, d)) for key in _keys(keys) for d in operator_digests
    )


def bearer_token(request: web.Request) -> str:
    """The bearer token of the request ('' when there is none)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _not_found(what: str, ident: str) -> Problem:
    problem = problems.PARTICIPANT_NOT_FOUND if what == "participant" else problems.CONFERENCE_NOT_FOUND
    return Problem(problem, f"No {what} {ident!r}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator, a conference's join token, or a participant's own token."""

    kind: Literal["operator", "join", "participant"]
    conference_id: str | None = None
    participant_id: str | None = None

    @property
    def operator(self) -> bool:
        return self.kind == "operator"

    def require_operator(self) -> None:
        if not self.operator:
            raise Problem(problems.FORBIDDEN, "Only a hotline operator token may do this")

    def require_conference(self, conference_id: str) -> None:
        """Reading a conference or joining it: an operator, or that conference's join token."""
        if self.operator or (self.kind == "join" and self.conference_id == conference_id):
            return
        raise _not_found("conference", conference_id)

    def require_participant(self, participant_id: str, conference_id: str | None) -> None:
        """Acting on a participant (``conference_id``: its conference, None when it does not exist):
        an operator or the participant's own token. Its conference's join token sees it but may not
        act (403); anyone else gets 404, whether it exists or not."""
        if self.operator or (self.kind == "participant" and self.participant_id == participant_id):
            return
        if self.kind == "join" and conference_id is not None and self.conference_id == conference_id:
            raise Problem(problems.FORBIDDEN, "A join token does not act on participants: use the participant token")
        raise _not_found("participant", participant_id)


def authenticate(request: web.Request, operator_digests: frozenset[str], ring: KeyRing) -> Principal:
    """Who is calling. ``operator_digests``: SHA-256 hex of every operator token (``Settings.operator_digests``:
    the configured tokens and BACKUPPLUS_OPERATOR_TOKEN_HASHES); ``ring``: the shared key ring."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            problems.UNAUTHORIZED, "Send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )
    digest = token_digest(token)
    is_operator = False
    for candidate in operator_digests:
        is_operator |= hmac.compare_digest(candidate, digest)
    if is_operator:
        return Principal("operator")
    conference_id = verify_join_token(ring.accepted_keys("join"), token)
    if conference_id is not None:
        return Principal("join", conference_id=conference_id)
    participant_id = verify_participant_token(ring.accepted_keys("participant"), token)
    if participant_id is not None:
        return Principal("participant", participant_id=participant_id)
    raise Problem(
        problems.UNAUTHORIZED,
        "The token is neither an operator token, a join token nor a participant token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
