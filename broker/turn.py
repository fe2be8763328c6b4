"""TURN for participants behind firewalls: the ``ice_servers`` of an admission answer.

Credentials follow coturn's TURN REST scheme (``use-auth-secret``): the username is
``<unix expiry>:<participant id>`` and the password base64(HMAC-SHA1(shared secret, username)), so any
coturn sharing the secret checks them without asking the broker, and refuses them once expired. The
shared secret itself never leaves the process: only the derived per-participant passwords do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.settings import Settings
from quotas.secret import derive_key


def derive_turn_secret(root: bytes) -> str:
    """The private turnserver's static-auth-secret: the key ring's ``turn`` key (HKDF) of ``root``, so
    every broker process of one ring derives the same and no other key is made from it. A rotated
    root reaches a private turnserver at serve's next start (its configuration is static)."""
    return derive_key(root, "turn").hex()


@dataclass(frozen=True)
class TurnService:
    """Where participants get relayed: the URLs handed out, the secret their credentials are signed with,
    and a readable status for /readyz (``mode``: private, external or none)."""

    urls: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)
    mode: str = "none"
    detail: str = "no TURN server: participants connect over direct UDP only"
    ttl_s: int = 12 * 3600
    health: Callable[[], str | None] | None = field(default=None, compare=False)  # private: why it is down

    @property
    def enabled(self) -> bool:
        return bool(self.urls) and self.secret is not None

    @classmethod
    def external(cls, settings: Settings) -> TurnService:
        """The external coturn servers of --turn-url / --turn-secret (none when not configured)."""
        if not settings.turn_urls or settings.turn_secret is None:
            return cls(ttl_s=settings.turn_credential_ttl_s)
        return cls(
            urls=settings.turn_urls, secret=settings.turn_secret.get_secret_value(), mode="external",
            detail=f"external TURN servers: {', '.join(settings.turn_urls)}", ttl_s=settings.turn_credential_ttl_s,
        )

    def public(self) -> dict[str, Any]:
        """For /readyz: no secret."""
        down = self.health() if self.health is not None else None
        return {"mode": self.mode, "urls": list(self.urls), "detail": down or self.detail}


def credentials(secret: str, participant_id: str, expires_at: int) -> tuple[str, str]:
    """(username, password) valid until the Unix time ``expires_at``."""
    username = f"{expires_at}:{participant_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def expiry(now: datetime, ttl_s: int, planned_end: datetime | None) -> int:
    """``ttl_s`` from now, but never past a planned end of the outage (the credentials die with it)."""
    until = int(now.timestamp()) + ttl_s
    if planned_end is not None:
        until = min(until, int(planned_end.timestamp()))
    return max(until, int(now.timestamp()) + 1)


def ice_servers(
    service: TurnService, participant_id: str, now: datetime, planned_end: datetime | None = None
) -> list[dict[str, Any]]:
    """The RTCIceServer list for one participant: its TURN credentials for every URL (empty without TURN)."""
    if not service.enabled or service.secret is None:
        return []
    username, password = credentials(service.secret, participant_id, expiry(now, service.ttl_s, planned_end))
    return [{"urls": list(service.urls), "username": username, "credential": password}]
