"""The WebSocket opening handshake, server side: RFC 6455 §4.2, with RFC 7692's extension.

Pure functions over a parsed :class:`~nessen.http.Request`: nothing here reads or writes
a socket. :func:`read_offer` checks what the client sent and returns an :class:`Offer`,
or raises :class:`HandshakeError` carrying the answer to send instead (400, 403 or 426);
:func:`accept_fields` builds the fields of the ``101`` for an accepted offer.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nessen.http import Request, Response

if TYPE_CHECKING:
    from websockets.extensions.base import Extension
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 §1.3: appended to the client's key before hashing it into the accept value."""
VERSION = "13"
"""The only protocol version served (RFC 6455 §4.1, ``Sec-WebSocket-Version``)."""
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


class HandshakeError(Exception):
    """A handshake the server refuses; :attr:`response` is the answer to send.

    Attributes:
        status: 400 (malformed), 403 (origin not allowed) or 426 (not a WebSocket
            request, or another protocol version).
        reason: A short tag for logs and metrics, e.g. ``"bad_key"``.
        response: The HTTP answer, with a one-line text body.
    """

    def __init__(self, status: int, reason: str, message: str, **fields: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        headers = {name.replace("_", "-"): value for name, value in fields.items()}
        self.response = Response(status, message + "\n", headers=headers)


@dataclass(slots=True)
class Offer:
    """What a valid handshake asked for.

    Attributes:
        key: ``Sec-WebSocket-Key``, as sent (base64 of 16 bytes).
        subprotocols: ``Sec-WebSocket-Protocol`` tokens, in the client's order of preference.
        origin: ``Origin``, or ``None`` (not a browser).
        extensions: The parsed ``Sec-WebSocket-Extensions`` offers: ``(name, params)``.
    """

    key: str
    subprotocols: tuple[str, ...] = ()
    origin: str | None = None
    extensions: list[tuple[str, list[tuple[str, str | None]]]] = field(default_factory=list)


@functools.cache
def _deflate() -> ServerPerMessageDeflateFactory:
    """permessage-deflate as websockets' servers enable it.

    4 KiB windows and ``memLevel`` 5: about 64 KiB of zlib state per connection instead
    of 256 KiB. Made (and ``websockets`` imported) on first use: the checks that refuse a handshake
    need neither.
    """
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    return ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
    )


def field_values(request: Request, name: str) -> list[str]:
    """Every value of the field ``name`` (lower case), as ``request.headers.getall`` gives.

    Read from the raw fields when :attr:`Request.headers` was not built: a WebSocket keeps
    its upgrade request as long as it is open, and the decoded copy of its fields would
    double what it holds of them (about 1.4 KiB each, for a few fields).
    """
    headers = request._headers
    if headers is not None:
        return headers.getall(name)
    key = name.encode("latin-1")
    size = len(key)
    return [
        value.decode("latin-1")
        for raw_name, value in request._raw_headers
        if len(raw_name) == size and raw_name.lower() == key
    ]


def tokens(values: Iterable[str]) -> list[str]:
    """The comma-separated tokens of a field's lines, stripped, lower-case, empty ones dropped."""
    return [t.strip().lower() for value in values for t in value.split(",") if t.strip()]


def is_websocket_request(request: Request) -> bool:
    """Whether ``request`` asks to upgrade to WebSocket.

    That is ``Connection: upgrade`` and ``Upgrade: websocket`` (RFC 6455 §4.2.1 items 3
    and 4; tokens, any case).
    """
    upgrade = field_values(request, "upgrade")
    if not upgrade or "websocket" not in tokens(upgrade):
        return False
    return "upgrade" in tokens(field_values(request, "connection"))


def read_offer(request: Request) -> Offer:
    """Check ``request`` as a WebSocket opening handshake (RFC 6455 §4.2.1).

    Returns:
        The offer: the key, the subprotocols and extensions asked for, the origin.

    Raises:
        HandshakeError: 426 with ``Upgrade: websocket`` for a request that is not a
            WebSocket upgrade (a plain GET to a WebSocket route), 426 with
            ``Sec-WebSocket-Version: 13`` for another version (§4.4), 400 for a method
            other than GET, HTTP/1.0, or a missing or malformed ``Sec-WebSocket-Key``.
    """
    if not is_websocket_request(request):
        raise HandshakeError(
            426,
            "not_websocket",
            "this is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket",
            Upgrade="websocket",
            Sec_WebSocket_Version=VERSION,
        )
    if request.method != "GET":
        raise HandshakeError(400, "bad_method", "a WebSocket handshake must be a GET")
    if request.http_version == "1.0":
        raise HandshakeError(400, "bad_version", "a WebSocket handshake needs HTTP/1.1")
    versions = field_values(request, "sec-websocket-version")
    if [v.strip() for v in versions] != [VERSION]:
        raise HandshakeError(
            426,
            "unsupported_version",
            "Sec-WebSocket-Version must be 13",
            Sec_WebSocket_Version=VERSION,
        )
    keys = field_values(request, "sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "bad_key", "send exactly one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(
            400, "bad_key", "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)"
        )
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    extensions = field_values(request, "sec-websocket-extensions")
    if extensions:
        from websockets.exceptions import InvalidHeader
        from websockets.headers import parse_extension

        try:
            for value in extensions:
                offers.extend((str(n), list(p)) for n, p in parse_extension(value))
        except InvalidHeader as exc:
            raise HandshakeError(
                400, "bad_extensions", f"Sec-WebSocket-Extensions is malformed: {exc}"
            ) from None
    subprotocols = tuple(
        t.strip()
        for value in field_values(request, "sec-websocket-protocol")
        for t in value.split(",")
        if t.strip()
    )
    return Offer(key, subprotocols, request.header("origin"), offers)


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key``: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2)."""
    import hashlib  # here: it sets up OpenSSL's digests, which plain HTTP does not need

    digest = hashlib.sha1(
        (key + GUID).encode("ascii")
    ).digest()  # the RFC's hash, not a security use
    return base64.b64encode(digest).decode("ascii")


def origin_allowed(origin: str | None, host: str, scheme: str, allowed: frozenset[str]) -> bool:
    """Whether a handshake from ``origin`` may open a WebSocket on ``host``.

    A browser always sends ``Origin`` (RFC 6454); a page from another site that opens a
    WebSocket to this server carries its own, and would otherwise act with the user's
    cookies (cross-site WebSocket hijacking). Gorilla's default, Django Channels'
    ``AllowedHostsOriginValidator`` and this server's: same origin only, unless listed.

    Args:
        origin: The ``Origin`` field, or ``None`` (a client that is not a browser: allowed).
        host: The request's host (``Host``, or the trusted forwarded one), ``host[:port]``.
        scheme: The request's effective scheme, ``http`` or ``https``.
        allowed: ``WS_ALLOWED_ORIGINS``: lower-case origins, or ``*`` for any.

    Returns:
        True for no ``Origin``, ``*``, a listed origin, or the server's own origin
        (same host and port; the default port of the scheme may be left out).
    """
    if origin is None:
        return True
    text = origin.strip().lower().rstrip("/")
    if "*" in allowed or text in allowed:
        return True
    origin_scheme, sep, netloc = text.partition("://")
    if not sep or not netloc or "/" in netloc:
        return False  # "null" (a sandboxed page, a file:// one), or malformed
    return _with_port(netloc, origin_scheme) == _with_port(host.lower(), scheme)


def _with_port(netloc: str, scheme: str) -> str:
    """``host:port``, with the scheme's default port when none is written."""
    if netloc.endswith("]") or ":" not in netloc.rsplit("]", 1)[-1]:
        return f"{netloc}:{_DEFAULT_PORTS.get(scheme, '')}"
    return netloc


def negotiate_deflate(offer: Offer, enabled: bool) -> tuple[str | None, Extension | None]:
    """Accept the first permessage-deflate offer the server can honour (RFC 7692 §5).

    Returns:
        ``(Sec-WebSocket-Extensions value, extension)``, or ``(None, None)`` when
        compression is off or no offer fits (the connection goes uncompressed).
    """
    if not enabled:
        return None, None
    from websockets.exceptions import NegotiationError
    from websockets.headers import build_extension

    for name, params in offer.extensions:
        if name != "permessage-deflate":
            continue
        try:
            response_params, extension = _deflate().process_request_params(params, [])
        except NegotiationError:
            continue
        return build_extension([(name, response_params)]), extension  # type: ignore[list-item]
    return None, None


def accept_fields(
    offer: Offer, subprotocol: str | None, extension_value: str | None, extra: Any = None
) -> list[tuple[str, str]]:
    """The fields of the ``101`` that accepts ``offer`` (besides Connection and Upgrade).

    Args:
        offer: The client's offer.
        subprotocol: The subprotocol chosen, one of ``offer.subprotocols``, or ``None``.
        extension_value: ``Sec-WebSocket-Extensions`` from :func:`negotiate_deflate`.
        extra: More ``(name, value)`` pairs, or a mapping, from the app.

    Raises:
        ValueError: ``subprotocol`` is not one the client offered (RFC 6455 §4.2.2).
    """
    fields = [("Sec-WebSocket-Accept", accept_value(offer.key))]
    if subprotocol is not None:
        if subprotocol not in offer.subprotocols:
            raise ValueError(
                f"subprotocol {subprotocol!r} was not offered by the client "
                f"(offered: {', '.join(offer.subprotocols) or 'none'})"
            )
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    if extension_value is not None:
        fields.append(("Sec-WebSocket-Extensions", extension_value))
    if extra:
        items = extra.items() if hasattr(extra, "items") else extra
        fields.extend((str(name), str(value)) for name, value in items)
    return fields
