"""ADMIN_ALLOW's guard on its own: which client addresses it lets through."""

from __future__ import annotations

import ipaddress

import pytest

from nessen.http import Request
from nessen.observability.admin import allowlist_guard


def request_from(address: str) -> Request:
    return Request("GET", b"/metrics", "/metrics", client=(address, 40000) if address else None)


def test_no_networks_means_no_guard() -> None:
    assert allowlist_guard((), lambda request: request.client_ip) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped: judged as the IPv4 address
        ("2001:db8::5", True),
        ("fe80::1%eth0", False),  # a zone does not make it parse as anything else
        ("11.0.0.1", False),
        ("2001:db9::5", False),
        ("", False),  # unknown client (no peer address)
        ("not-an-address", False),
    ],
)
def test_only_the_listed_networks_pass(address: str, allowed: bool) -> None:
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    guard = allowlist_guard(networks, lambda request: request.client_ip)
    assert guard is not None
    refusal = guard(request_from(address))
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.status == 403
        assert refusal.headers["cache-control"] == "no-store"
