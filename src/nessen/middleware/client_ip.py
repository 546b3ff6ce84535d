"""The client's address behind trusted proxies, for middleware given their own proxy list.

The server works the client out once per request from ``TRUST_PROXY`` (``ctx.client_ip``,
see :mod:`nessen.http.forwarded`); the built-in middleware use that. This module keeps
:func:`client_address_resolver` for a middleware built with its own ``trusted_networks``,
which applies the same right-most-untrusted ``X-Forwarded-For`` walk from the socket peer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from nessen.http import Request
from nessen.http.forwarded import Network, ProxyTrust

__all__ = ["ClientAddress", "Network", "client_address_resolver"]

ClientAddress = Callable[[Request], str]
"""``(request) -> address`` as text, e.g. ``"203.0.113.7"``."""


def client_address_resolver(networks: Iterable[Network] | None) -> ClientAddress:
    """Build the function that finds a request's client address.

    Args:
        networks: Proxy networks whose ``X-Forwarded-For`` is believed. ``None``: the
            server's answer, ``request.client_ip`` (``TRUST_PROXY``). Empty: the socket
            peer is always the client.

    Returns:
        ``(request) -> str``. With a peer outside ``networks``, the peer address
        (``request.peer_ip``). Otherwise the right-most ``X-Forwarded-For`` hop that is not
        in a trusted network; if every hop is trusted, the left-most one; if a hop is not
        an IP address, the hop to its right (the last one a trusted proxy vouched for).
        Addresses come back normalised (``1.2.3.4:80`` -> ``1.2.3.4``, ``::ffff:1.2.3.4``
        -> ``1.2.3.4``); verdicts are cached for 4096 addresses.
    """
    if networks is None:
        return _client_ip
    trusted_networks = tuple(networks)
    if not trusted_networks:
        return _peer
    trust = ProxyTrust(trusted_networks)

    def resolve(request: Request) -> str:
        peer = request.peer_ip
        if not trust.trusts(peer):
            return peer
        return trust.resolve(peer, "http", request._raw_headers)[0]

    return resolve


def _client_ip(request: Request) -> str:
    return request.client_ip


def _peer(request: Request) -> str:
    return request.peer_ip
