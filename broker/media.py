"""How the broker speaks to the media plane: one small protocol it owns.

The composition root (``backupplus``) injects an implementation that places the outage on a media
node and hands it the participant's offer; the broker and the API never import ``media``.
Implementations raise :class:`broker.errors.NoMediaNode` or :class:`broker.errors.MediaNodeFailed`.
"""

from __future__ import annotations

from typing import Any, Protocol


class MediaGateway(Protocol):
    async def offer(self, participant: dict[str, Any], sdp: str, sdp_type: str) -> dict[str, Any]:
        """The media node's answer ``{"type": "answer", "sdp"}`` to this participant's offer."""
        ...
