"""Opaque ids that still say which outage they belong to, so a request finds its keys without a lookup."""

from __future__ import annotations

import re
import secrets

_OUTAGE = re.compile(r"^o-[0-9a-f]{12}$")
_CHILD = re.compile(r"^(o-[0-9a-f]{12})\.[cp][0-9a-f]{8}$")


def new_outage_id() -> str:
    return f"o-{secrets.token_hex(6)}"


def new_conference_id(outage_id: str) -> str:
    return f"{outage_id}.c{secrets.token_hex(4)}"


def new_participant_id(outage_id: str) -> str:
    return f"{outage_id}.p{secrets.token_hex(4)}"


def is_outage_id(value: str) -> bool:
    return bool(_OUTAGE.match(value))


def outage_of(child_id: str) -> str | None:
    """The outage of a conference or participant id, or None when the id is malformed."""
    m = _CHILD.match(child_id)
    return m.group(1) if m else None


def is_conference_id(value: str) -> bool:
    return bool(_CHILD.match(value)) and value.split(".", 1)[1].startswith("c")


def is_participant_id(value: str) -> bool:
    return bool(_CHILD.match(value)) and value.split(".", 1)[1].startswith("p")
