"""Bearer tokens: operator tokens from configuration, and HMAC-signed join tokens bound to one conference.

A join token carries only its conference id and a signature; it stays valid exactly as long as the
conference and its outage are live (checked at each use), so extending the window extends it and
restore or deletion revokes it without a revocation list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from . import problems
from .problems import Problem

_JOIN_PREFIX = "jt1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


OPERATOR_TOKEN_PREFIX = "bpo_"


def new_operator_token() -> str:
    """A random operator token. The prefix makes it recognisable (secret scanners, logs) and keeps it
    from starting with "-", which command lines would read as an option (``--token -abc…`` fails)."""
    return OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(24)


def sign_join_token(secret: bytes, conference_id: str) -> str:
    payload = _b64(conference_id.encode())
    mac = hmac.new(secret, f"{_JOIN_PREFIX}.{payload}".encode(), hashlib.sha256).digest()[:18]
    return f"{_JOIN_PREFIX}.{payload}.{_b64(mac)}"


def verify_join_token(secret: bytes, token: str) -> str | None:
    """The conference id the token is for, or None when it is not a genuine join token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _JOIN_PREFIX or len(token) > 256:
        return None
    try:
        mac = _unb64(parts[2])
        conference_id = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = hmac.new(secret, f"{_JOIN_PREFIX}.{parts[1]}".encode(), hashlib.sha256).digest()[:18]
    if not hmac.compare_digest(mac, expected):
        return None
    return conference_id


@dataclass(frozen=True)
class Principal:
    operator: bool
    conference_id: str | None = None

    def require_operator(self) -> None:
        if not self.operator:
            raise Problem(problems.FORBIDDEN, "Only a hotline operator token may do this")

    def require_conference(self, conference_id: str) -> None:
        if not self.operator and self.conference_id != conference_id:
            raise Problem(problems.FORBIDDEN, "This join token is for another conference")


def authenticate(request: web.Request, operator_tokens: frozenset[str], secret: bytes) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            problems.UNAUTHORIZED, "Send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )
    for candidate in operator_tokens:
        if hmac.compare_digest(candidate.encode(), token.encode()):
            return Principal(operator=True)
    conference_id = verify_join_token(secret, token)
    if conference_id is None:
        raise Problem(
            problems.UNAUTHORIZED,
            "The token is neither an operator token nor a valid join token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return Principal(operator=False, conference_id=conference_id)
