from __future__ import annotations

import pytest

from nessen.server.limits import HostAllowlist


@pytest.mark.parametrize(
    ("entries", "host", "allowed"),
    [
        ({"example.com"}, b"example.com", True),
        ({"example.com"}, b"EXAMPLE.com:8080", True),
        ({"example.com:8080"}, b"example.com:8080", True),
        ({"example.com:8080"}, b"example.com:9090", False),
        ({"example.com:8080"}, b"example.com", False),
        ({"*.example.com"}, b"a.example.com", True),
        ({"*.example.com"}, b"a.b.example.com:1", True),
        ({"*.example.com"}, b"example.com", False),
        ({"*.example.com"}, b"badexample.com", False),
        ({"[::1]"}, b"[::1]:3000", True),
        ({"[::1]:3000"}, b"[::1]:3000", True),
        ({"[::1]:3000"}, b"[::1]:4000", False),
        ({"[::1]"}, b"[::2]", False),
        ({"example.com"}, b"", False),
        ({"example.com"}, b" example.com ", True),
        ({"example.com"}, b"example.com.", True),
        ({"example.com"}, b"example.com.:8080", True),
        ({"example.com."}, b"example.com", True),  # an entry written fully qualified
        ({"example.com.:8080"}, b"example.com:8080", True),
        ({"example.com:8080"}, b"example.com.:8080", True),
        ({"example.com:8080"}, b"example.com.:9090", False),
        ({"*.example.com"}, b"a.example.com.", True),
        ({"*.example.com"}, b"example.com.", False),
        ({"example.com"}, b"example.com..", False),
    ],
)
def test_host_allowlist(entries: set[str], host: bytes, allowed: bool) -> None:
    assert HostAllowlist(entries).allows(host) is allowed


def test_empty_allowlist_is_false() -> None:
    assert not HostAllowlist([])
    assert HostAllowlist(["a"])
