"""The response a handler returns, and the helpers that build common ones."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import Any

import orjson

from nessen.http.headers import Headers, HeadersInit

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"

BodyStream = AsyncIterable[bytes] | Iterable[bytes]


class Response:
    """One HTTP response: status, header fields and content.

    A buffered response holds its whole content in ``body`` (bytes) and goes out with a
    ``Content-Length``. A streamed one (``Response.streaming``) holds an iterable of
    byte chunks and goes out with chunked transfer coding on HTTP/1.1 (RFC 9112 §7.1), or
    delimited by closing the connection on HTTP/1.0. The server adds ``Date``, ``Server``,
    ``Content-Length`` and the connection fields; a handler should not set those.

    Attributes:
        status: Status code, 200..599 (1xx are the server's business).
        body: Content bytes; ``b""`` for none. A ``str`` passed in is encoded as UTF-8.
        content_type: The ``Content-Type`` field value, or ``None`` to send none.
        stream: Iterable of byte chunks for a streamed response, else ``None``.
    """

    __slots__ = (
        "_encoded",
        "_encoded_keys",
        "_headers",
        "body",
        "content_type",
        "status",
        "stream",
    )

    def __init__(
        self,
        status: int = 200,
        body: bytes | str = b"",
        *,
        headers: HeadersInit = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.body: bytes = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self._headers: Headers | None = None if headers is None else Headers(headers)
        self.stream: BodyStream | None = None
        self._encoded = ""
        self._encoded_keys: tuple[str, ...] = ()

    @property
    def headers(self) -> Headers:
        """Header fields set by the handler and middleware (created on first use).

        Fields added with :meth:`add_encoded_fields` are in it too, after those added
        before them.
        """
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers()
        if self._encoded:
            for line in self._encoded.split("\r\n")[:-1]:
                name, _, value = line.partition(": ")
                headers.add(name, value)
            self._encoded = ""
            self._encoded_keys = ()
        return headers

    def has_field(self, key: str) -> bool:
        """Whether a field named ``key`` (lower case) is set, without building ``headers``."""
        headers = self._headers
        return (headers is not None and key in headers._keys) or key in self._encoded_keys

    def add_encoded_fields(self, block: str, keys: tuple[str, ...]) -> None:
        r"""Append header fields already serialised: ``"Name: value\r\n"`` lines.

        The fast path of the built-in middleware: the lines go out as they are, and a
        :class:`Headers` is only built if someone reads :attr:`headers`. The caller
        guarantees what :meth:`headers` would otherwise check when sending: names are
        tokens, values hold no CR, LF or NUL and are latin-1, and none is a field the
        server owns (Content-Length, Connection...).

        Args:
            block: The serialised lines, each ending in CRLF.
            keys: The lower-case names of the fields in ``block``, in order.
        """
        self._encoded += block
        self._encoded_keys += keys

    @classmethod
    def json(cls, data: Any, status: int = 200, *, headers: HeadersInit = None) -> Response:
        """Build an ``application/json`` response; ``data`` is encoded with orjson.

        Raises:
            TypeError: ``data`` holds something orjson cannot encode.
        """
        return cls(status, orjson.dumps(data), headers=headers, content_type=JSON_TYPE)

    @classmethod
    def text(cls, text: str, status: int = 200, *, headers: HeadersInit = None) -> Response:
        """Build a ``text/plain; charset=utf-8`` response."""
        return cls(status, text.encode(), headers=headers, content_type=TEXT_TYPE)

    @classmethod
    def html(cls, html: str, status: int = 200, *, headers: HeadersInit = None) -> Response:
        """Build a ``text/html; charset=utf-8`` response. ``html`` is sent as is: escape it."""
        return cls(status, html.encode(), headers=headers, content_type=HTML_TYPE)

    @classmethod
    def streaming(
        cls,
        chunks: BodyStream,
        status: int = 200,
        *,
        headers: HeadersInit = None,
        content_type: str | None = None,
    ) -> Response:
        """Build a response whose content is produced chunk by chunk.

        The server writes each chunk as it comes and waits for the client to read before
        asking for more (write flow control), so memory stays bounded for slow readers.

        Args:
            chunks: An async or plain iterable of ``bytes``; empty chunks are skipped.
            status: Status code.
            headers: Extra header fields.
            content_type: ``Content-Type`` value, if any.
        """
        response = cls(status, headers=headers, content_type=content_type)
        response.stream = chunks
        return response

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Response:
        """Build a response from the seed's shape ``{"status", "headers", "body"}``.

        ``body`` may be bytes, str (sent as text/plain unless a Content-Type is given), or
        any other JSON-encodable value (sent as JSON). ``status`` defaults to 200.

        Raises:
            TypeError: ``status`` is not an int, ``headers`` not a mapping, or the body
                cannot be encoded.
        """
        status = data.get("status", 200)
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"response status must be an int, got {status!r}")
        raw_headers = data.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            raise TypeError("response headers must be a mapping")
        headers = Headers({str(k): str(v) for k, v in raw_headers.items()})
        content_type = headers.get("content-type")
        if content_type is not None:
            del headers["content-type"]
        body = data.get("body", b"")
        if body is None:
            body = b""
        if isinstance(body, bytes):
            payload = body
        elif isinstance(body, str):
            payload = body.encode()
            content_type = content_type or TEXT_TYPE
        else:
            payload = orjson.dumps(body)
            content_type = content_type or JSON_TYPE
        response = cls(status, payload, content_type=content_type)
        if headers:
            response._headers = headers
        return response

    @classmethod
    def switching_protocols(
        cls,
        protocol_factory: Callable[[], Any],
        protocol: str,
        *,
        headers: HeadersInit = None,
    ) -> SwitchingProtocols:
        """Answer an Upgrade request with ``101 Switching Protocols`` and take the connection.

        See :class:`SwitchingProtocols`. Only a request that asked to upgrade
        (``Connection: Upgrade`` and ``Upgrade: ...``) may get one; for any other the
        server answers 500 instead.

        Args:
            protocol_factory: Called once, with no argument, when the 101 has been
                written: returns the ``asyncio.Protocol`` that owns the connection next.
            protocol: The ``Upgrade`` value naming the protocol switched to, e.g.
                ``"websocket"`` (RFC 9110 §7.8).
            headers: More fields for the 101 (``Sec-WebSocket-Accept``, say).
        """
        return SwitchingProtocols(protocol_factory, protocol, headers=headers)

    def __repr__(self) -> str:
        kind = "stream" if self.stream is not None else f"{len(self.body)} bytes"
        return f"<Response {self.status} {self.content_type or '-'} {kind}>"


class SwitchingProtocols(Response):
    """A ``101 Switching Protocols`` answer that hands the connection to another protocol.

    RFC 9110 §15.2.2 and §7.8. The server writes the status line, the handler's fields,
    ``Connection: Upgrade`` and ``Upgrade: <protocol>``; then calls ``protocol_factory()``
    and gives it the transport (``connection_made``), followed, through
    ``data_received``, by the bytes the client sent after the request, as memoryviews of
    the buffers they were read into (no copy), and by everything it sends later. From then
    on HTTP is over on that connection: no HTTP deadline or limit applies to it; the
    server closes it when it stops.

    Attributes:
        protocol_factory: Returns the ``asyncio.Protocol`` for the connection.
        protocol: The ``Upgrade`` value sent.
    """

    __slots__ = ("protocol", "protocol_factory")

    def __init__(
        self, protocol_factory: Callable[[], Any], protocol: str, *, headers: HeadersInit = None
    ) -> None:
        super().__init__(101, headers=headers)
        self.protocol_factory = protocol_factory
        self.protocol = protocol
