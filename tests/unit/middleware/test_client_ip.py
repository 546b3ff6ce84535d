from __future__ import annotations

import ipaddress

import pytest

from nessen.config import Config
from nessen.middleware.client_ip import client_address_resolver
from tests.unit.middleware.helpers import make_request

PROXIES = Config(trust_proxy=("10.0.0.0/8",)).trusted_networks


def resolve(peer: str, *forwarded: str, networks: object = PROXIES) -> str:
    headers = [("X-Forwarded-For", value) for value in forwarded]
    return client_address_resolver(networks)(make_request(headers=headers, client=peer))  # type: ignore[arg-type]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert resolve("203.0.113.9", "198.51.100.1", networks=()) == "203.0.113.9"


def test_a_peer_outside_the_trusted_networks_is_the_client() -> None:
    assert resolve("203.0.113.9", "198.51.100.1") == "203.0.113.9"


def test_behind_one_trusted_proxy_the_appended_address_is_the_client() -> None:
    assert resolve("10.0.0.5", "198.51.100.1") == "198.51.100.1"


def test_a_spoofed_left_entry_does_not_change_the_client() -> None:
    # the client sent "X-Forwarded-For: 1.2.3.4"; our proxy appended the real address
    assert resolve("10.0.0.5", "1.2.3.4, 198.51.100.1") == "198.51.100.1"
    assert resolve("10.0.0.5", "9.9.9.9, 8.8.8.8, 198.51.100.1") == "198.51.100.1"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    assert resolve("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.1.1.1, 10.2.2.2") == "198.51.100.1"


def test_repeated_fields_count_as_one_list_in_order() -> None:
    assert resolve("10.0.0.5", "1.2.3.4", "198.51.100.1, 10.9.9.9") == "198.51.100.1"


def test_every_hop_trusted_gives_the_farthest() -> None:
    assert resolve("10.0.0.5", "10.3.3.3, 10.2.2.2") == "10.3.3.3"


def test_a_trusted_peer_without_the_field_is_the_client() -> None:
    assert resolve("10.0.0.5") == "10.0.0.5"


def test_garbage_stops_the_walk_at_the_last_vouched_hop() -> None:
    assert resolve("10.0.0.5", "198.51.100.1, not-an-ip, 10.2.2.2") == "10.2.2.2"
    assert resolve("10.0.0.5", "unknown") == "10.0.0.5"


@pytest.mark.parametrize(
    ("hop", "expected"),
    [
        ("198.51.100.1:4711", "198.51.100.1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
    ],
)
def test_hops_are_normalised(hop: str, expected: str) -> None:
    assert resolve("10.0.0.5", hop) == expected


def test_trusting_every_peer_still_walks_from_the_right() -> None:
    everyone = Config(trust_proxy=True).trusted_networks
    # with every address trusted, the left-most (farthest) hop is the best there is
    assert resolve("10.0.0.5", "1.2.3.4, 198.51.100.1", networks=everyone) == "1.2.3.4"


def test_ipv6_proxy_networks() -> None:
    networks = (ipaddress.ip_network("fd00::/8"),)
    assert resolve("fd00::1", "2001:db8::7", networks=networks) == "2001:db8::7"
