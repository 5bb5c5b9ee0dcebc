"""Who may deliver webhooks: Bolna signs nothing, so besides the path's token the documented
protection is the list of addresses it sends from. Behind a reverse proxy the sender is in
X-Forwarded-For, which anyone can write: it is believed only from the configured proxies."""
from __future__ import annotations

import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


class SenderPolicy:
    def __init__(self, allowed: Iterable[str] | None, trusted_proxies: Iterable[str] = ()):
        """`allowed`: addresses or ranges that may deliver; None lets anyone (the token still holds)."""
        self.allowed = None if allowed is None else _networks(allowed)
        self.trusted_proxies = _networks(trusted_proxies)

    def sender(self, peer: str, forwarded_for: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The delivering address: the peer, or, when the peer is a trusted proxy, the nearest
        address in X-Forwarded-For that is not one of the trusted proxies (the hops before it
        were written by the client and prove nothing)."""
        address = _address(peer)
        if address is None or not self._trusted(address) or not forwarded_for:
            return address
        for hop in reversed(forwarded_for.split(",")):
            hop_address = _address(hop)
            if hop_address is None:
                return None  # a proxy we trust wrote something that is not an address
            if not self._trusted(hop_address):
                return hop_address
        return address

    def admits(self, peer: str, forwarded_for: str | None) -> bool:
        if self.allowed is None:
            return True
        sender = self.sender(peer, forwarded_for)
        return sender is not None and any(sender in network for network in self.allowed)

    def is_trusted_proxy(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and self._trusted(address)

    def _trusted(self, address) -> bool:
        return any(address in network for network in self.trusted_proxies)
