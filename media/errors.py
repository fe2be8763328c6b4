"""Errors the media plane raises to the broker (mapped to 503 no_media_node / 502 media_node_error)."""

from __future__ import annotations


class MediaError(Exception):
    """Base class of media-plane errors."""


class NoMediaNode(MediaError):
    """No live, ready media node has room for this outage."""

    code = "no_media_node"


class MediaNodeError(MediaError):
    """The chosen media node failed or refused the offer. ``code`` says why (stable, machine-readable)."""

    def __init__(self, code: str, detail: str = "", status: int = 502) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.status = status
