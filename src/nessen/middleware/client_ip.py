"""The client's address behind trusted proxies: the right-most untrusted X-Forwarded-For hop.

Each proxy appends the address it received the request from to ``X-Forwarded-For``, so
only the entries appended by proxies we trust are believable. Walking the list from the
right and stopping at the first address that is not a trusted proxy gives the client as
our outermost trusted proxy saw it; anything further left was written by the client and
may be spoofed (``X-Forwarded-For: 1.2.3.4`` sent by an attacker stays on the left).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable

from nessen.http import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ClientAddress = Callable[[Request], str]
"""``(request) -> address`` as text, e.g. ``"203.0.113.7"``."""


def _parse_hop(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse one X-Forwarded-For entry: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has two or more colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address_resolver(networks: Iterable[Network]) -> ClientAddress:
    """Build the function that finds a request's client address.

    Args:
        networks: Proxy networks whose ``X-Forwarded-For`` is believed (``Config.
            trusted_networks``). Empty: the socket peer is always the client.

    Returns:
        ``(request) -> str``. With no trusted networks, or a peer outside them, the peer
        address (``request.client_ip``). Otherwise the right-most ``X-Forwarded-For`` hop
        that is not in a trusted network; if every hop is trusted, the left-most one; if
        a hop is not an IP address, the hop to its right (the last one a trusted proxy
        vouched for). Addresses come back normalised (``1.2.3.4:80`` -> ``1.2.3.4``,
        ``::ffff:1.2.3.4`` -> ``1.2.3.4``); parsing is cached for 4096 addresses (LRU).
    """
    trusted_networks = tuple(networks)
    if not trusted_networks:
        return _peer

    @functools.lru_cache(maxsize=4096)
    def classify(text: str) -> tuple[bool | None, str]:
        """``(trusted, normalised address)``; ``trusted`` is ``None`` when not an IP."""
        address = _parse_hop(text)
        if address is None:
            return None, text
        return any(address in network for network in trusted_networks), str(address)

    def resolve(request: Request) -> str:
        peer = request.client_ip
        if not classify(peer)[0]:
            return peer
        values = request.headers.getall("x-forwarded-for")
        if not values:
            return peer
        chosen = peer
        for value in reversed(values):
            for hop in reversed(value.split(",")):
                verdict, address = classify(hop.strip())
                if verdict is None:  # not an address: believe nothing left of it
                    return chosen
                chosen = address
                if not verdict:
                    return address
        return chosen  # every hop is a trusted proxy: the farthest one

    return resolve


def _peer(request: Request) -> str:
    return request.client_ip
