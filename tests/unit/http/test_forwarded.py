from __future__ import annotations

import ipaddress

import pytest

from nessen.http.forwarded import ProxyTrust, parse_forwarded

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def fields(**pairs: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in pairs.items()]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}],
        ),
        ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        ('for="a\\"b,c"; host=x', [{"for": 'a"b,c', "host": "x"}]),
        (" , for=1.2.3.4 ,, ", [{"for": "1.2.3.4"}]),
        ("for=[::1]:80", [{"for": "[::1]:80"}]),  # unquoted IPv6, read leniently
    ],
)
def test_parse_forwarded(value: str, expected: list[dict[str, str]]) -> None:
    assert parse_forwarded(value) == expected


@pytest.mark.parametrize("value", ['for="unterminated', "for", "for=1.2.3.4 x=1", "=1", "for=a b"])
def test_malformed_forwarded_values(value: str) -> None:
    assert parse_forwarded(value) is None


def test_a_malformed_line_stops_the_walk_at_the_hop_to_its_right() -> None:
    trust = ProxyTrust(PROXIES, headers="forwarded")
    raw = [(b"Forwarded", b'for="broken'), (b"Forwarded", b"for=10.1.1.1;proto=https")]
    assert trust.resolve("10.0.0.1", "http", raw) == ("10.1.1.1", "https", None)


def test_forwarded_without_for_or_with_unknown_believes_nothing_left_of_it() -> None:
    trust = ProxyTrust(PROXIES, headers="forwarded")
    raw = [(b"forwarded", b"for=198.51.100.1, for=unknown;proto=https")]
    assert trust.resolve("10.0.0.1", "http", raw) == ("10.0.0.1", "http", None)
    raw = [(b"forwarded", b"proto=https")]
    assert trust.resolve("10.0.0.1", "http", raw) == ("10.0.0.1", "http", None)


def test_every_hop_trusted_gives_the_left_most_element() -> None:
    trust = ProxyTrust(PROXIES, headers="forwarded")
    raw = [(b"forwarded", b"for=10.3.3.3;host=a.example, for=10.2.2.2;host=b.example")]
    assert trust.resolve("10.0.0.1", "http", raw) == ("10.3.3.3", "http", "a.example")


def test_x_forwarded_fields_repeated_are_one_list_and_the_right_most_proto_counts() -> None:
    trust = ProxyTrust(PROXIES)
    raw = [
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"X-Forwarded-For", b"198.51.100.1, 10.9.9.9"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"a.example, b.example:8443"),
    ]
    assert trust.resolve("10.0.0.1", "https", raw) == ("198.51.100.1", "http", "b.example:8443")


def test_a_proto_field_alone_is_believed_from_a_trusted_peer() -> None:
    assert ProxyTrust(PROXIES).resolve("10.0.0.1", "http", fields(x_forwarded_proto="HTTPS")) == (
        "10.0.0.1",
        "https",
        None,
    )


def test_verdict_caches_are_bounded() -> None:
    trust = ProxyTrust(PROXIES)
    for n in range(5000):
        trust.trusts(f"192.0.{n // 256}.{n % 256}")
    assert len(trust._peers) <= 4096
    assert trust.trusts("10.0.0.1") is True
    assert trust.trusts("not an address") is False


def test_an_unknown_header_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="x-forwarded, forwarded"):
        ProxyTrust(PROXIES, headers="x-real-ip")
