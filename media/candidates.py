"""Which remote ICE candidates the node may send connectivity checks to.

A participant's offer names the addresses the node will send STUN binding requests to. Unchecked,
an offer turns the node into a probe of its own machine and network (127.0.0.1, the LAN behind it,
multicast groups). So every remote candidate (from the SDP, trickled, or an mDNS name once resolved)
is classified by its address and dropped unless the policy (``Settings.media_remote_candidates``)
allows its class:

- never: unspecified (0.0.0.0/8, ::), multicast, link-local (169.254/16, fe80::/10), 240/4;
- ``public`` (production): global addresses only;
- ``private``: also RFC 1918, CGNAT 100.64/10, IPv6 ULA fc00::/7 (a deployment inside one network);
- ``loopback``: also 127/8 and ::1 (the demo and the tests, everything on one machine).

IPv4-mapped IPv6 addresses are classified as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Literal

from media import aiortc_compat

log = logging.getLogger("backupplus.media.candidates")

Policy = Literal["public", "private", "loopback"]
ALLOWED: dict[str, frozenset[str]] = {
    "public": frozenset({"public"}),
    "private": frozenset({"public", "private"}),
    "loopback": frozenset({"public", "private", "loopback"}),
}
_NEVER = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "240.0.0.0/4", "169.254.0.0/16", "fe80::/10")]
_PRIVATE = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10")
]


def classify(host: str) -> str:
    """``public``, ``private``, ``loopback`` or ``never`` (also for anything that is not an address)."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "never"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast or address.is_link_local:
        return "never"
    if any(address in net for net in _NEVER if net.version == address.version):
        return "never"
    if address.is_loopback:
        return "loopback"
    if any(address in net for net in _PRIVATE if net.version == address.version):
        return "private"
    return "public"


def allowed(host: str, policy: Policy) -> bool:
    return classify(host) in ALLOWED[policy]


class CandidateGuard:
    """Drops the remote candidates ``policy`` refuses on one peer connection's ICE transports;
    ``dropped`` counts them by class (the node logs it and adds it to its own count)."""

    def __init__(self, policy: Policy, on_drop: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        self.dropped: dict[str, int] = {}
        self._on_drop = on_drop
        self._guarded: set[int] = set()

    def guard(self, pc: Any) -> list[aiortc_compat.Hook]:
        """Guard every ICE transport the peer connection has now (call after its transceivers are
        made, before the remote description is set); the hooks to remove when the session closes."""
        hooks = []
        for transceiver in pc.getTransceivers():
            connection = aiortc_compat.ice_connection(transceiver.sender.transport.transport)
            if id(connection) in self._guarded:
                continue
            self._guarded.add(id(connection))
            hooks.append(aiortc_compat.filter_remote_candidates(connection, self._admit))
        return hooks

    def _admit(self, candidate: Any, network_host: str) -> bool:
        kind = classify(network_host)
        if kind in ALLOWED[self.policy]:
            return True
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        log.debug("remote candidate %s:%s ignored (%s, policy %s)", network_host, candidate.port, kind, self.policy)
        if self._on_drop is not None:
            self._on_drop(kind)
        return False

    @property
    def total(self) -> int:
        return sum(self.dropped.values())
