"""The opening handshake's checks read the upgrade request's fields without decoding them all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nessen.http import Request
from nessen.http.headers import Headers
from nessen.websocket.handshake import field_values, is_websocket_request, read_offer

NAMES = st.sampled_from([b"Upgrade", b"upgrade", b"UPGRADE", b"Connection", b"Origin", b"X-A"])
VALUES = st.binary(max_size=12).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))


@given(raw=st.lists(st.tuples(NAMES, VALUES), max_size=8), name=NAMES, built=st.booleans())
def test_field_values_are_what_headers_getall_gives(
    raw: list[tuple[bytes, bytes]], name: bytes, built: bool
) -> None:
    request = Request("GET", b"/ws", "/ws", raw_headers=raw)
    if built:
        assert request.headers is not None
    key = name.decode().lower()
    assert field_values(request, key) == Headers.from_raw(raw).getall(key)


def test_checking_a_handshake_leaves_the_request_fields_undecoded() -> None:
    """The WebSocket keeps its upgrade request: decoding every field would double it."""
    request = Request(
        "GET",
        b"/ws",
        "/ws",
        raw_headers=[
            (b"Host", b"t"),
            (b"Connection", b"keep-alive, Upgrade"),
            (b"Upgrade", b"websocket"),
            (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"Sec-WebSocket-Protocol", b"chat, superchat"),
            (b"Origin", b"http://t"),
        ],
    )
    assert is_websocket_request(request)
    offer = read_offer(request)
    assert (offer.key, offer.subprotocols, offer.origin) == (
        "dGhlIHNhbXBsZSBub25jZQ==",
        ("chat", "superchat"),
        "http://t",
    )
    assert request._headers is None
