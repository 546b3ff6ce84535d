"""Serialising responses (RFC 9112): status line, header fields, chunked transfer coding.

Also the server-made error answer (:func:`error_answer`), and its body, which every serving
path sends.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from nessen.errors import NessenError
from nessen.http.headers import FIELD_NAME, SERVER_FIELDS
from nessen.http.response import Response

_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_PHRASES.update({413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"})
"""Reason phrases; RFC 9110 §15 renamed a few since ``http.HTTPStatus`` was written."""
_STATUS_LINES_11 = {code: f"HTTP/1.1 {code} {phrase}\r\n" for code, phrase in _PHRASES.items()}
_STATUS_LINES_10 = {code: f"HTTP/1.0 {code} {phrase}\r\n" for code, phrase in _PHRASES.items()}
_valid_names: set[str] = set()
_MAX_CACHED_NAMES = 4096


FIELD_NAME_BYTES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A field name as bytes is a token (RFC 9110 §5.1, §5.6.2): ``FIELD_NAME_BYTES.fullmatch``."""
SERVER_FIELD_NAMES = frozenset(name.encode() for name in SERVER_FIELDS)
""":data:`~nessen.http.headers.SERVER_FIELDS` as lower-case bytes, for ASGI header pairs."""

FRAMING_FIELDS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
"""The fields a response's sender may not set: the message framing and the connection's
(RFC 9112 §6, §9); the server writes them. ``Server`` and ``Date`` a handler may set: its
value replaces the server's (see :data:`OWN_SERVER`)."""

OWN_SERVER = 1
"""A response bit: its handler set ``Server``, which is sent instead of the server's."""
OWN_DATE = 2
"""A response bit: its handler set ``Date``, which is sent instead of the server's."""
ASKS_CLOSE = 4
"""A response bit: its handler set ``Connection: close``; the connection closes after it."""

NO_CONTENT_STATUSES = frozenset({204, 205, 304})
"""Final statuses whose response never carries content (RFC 9110 §15.3.5, §15.3.6, §15.4.5;
1xx are never built from a handler's response). See :func:`no_content_framing`."""

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


class ResponseError(NessenError):
    """A handler built a response that cannot be sent (bad header field, bad status, too big).

    The server answers 500 instead and the runtime logs this message under the request id.
    """


class PreparedResponse(Response):
    r"""A :class:`~nessen.http.Response` whose header fields are already serialised.

    For handlers that hold their fields as bytes already (the ASGI adapter): the server
    writes :attr:`fields` as they are, after the status line, ``Date``/``Server`` and
    ``Content-Type`` (if set), and before its own framing and connection fields, skipping
    the parse into :class:`~nessen.http.Headers` and back.

    Attributes:
        fields: ``"Name: value\r\n"`` lines, latin-1 text. Whoever builds them must have
            refused names that are not tokens and values holding CR, LF or NUL (RFC 9110
            §5), and left out the fields the server owns (Content-Length,
            Transfer-Encoding, Connection, Keep-Alive, Date, Server).
        content_length: For a streamed response, its length (the stream must produce
            exactly that many bytes, as with a handler-set Content-Length); ``None`` for
            chunked coding. Ignored for a buffered one, whose length is ``len(body)``.
        claims: :data:`OWN_SERVER`, :data:`OWN_DATE` (``fields`` holds that field) and
            :data:`ASKS_CLOSE` bits, as :func:`claims_of` gives for other responses.
    """

    __slots__ = ("claims", "content_length", "fields")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        *,
        fields: str,
        content_length: int | None = None,
        claims: int = 0,
    ) -> None:
        # Response.__init__'s attributes, set here: one call fewer per response (and
        # ``body`` is always bytes here).
        self.status = status
        self.body = body
        self.content_type = None
        self._headers = None
        self.stream = None
        self._encoded = ""
        self._encoded_keys = ()
        self.fields = fields
        self.content_length = content_length
        self.claims = claims


def check_status(status: int) -> None:
    """Check a handler's final status: 200..599 (1xx are the server's to send).

    Raises:
        ResponseError: It is not an int (``bool`` excluded; ``HTTPStatus`` is one), or out
            of that range.
    """
    if not isinstance(status, int) or isinstance(status, bool):
        raise ResponseError(f"handler returned status {status!r}; must be an int 200..599")
    if not 200 <= status <= 599:
        raise ResponseError(f"handler returned status {status}; must be 200..599")


def claims_of(response: Response) -> int:
    """The :data:`OWN_SERVER`, :data:`OWN_DATE` and :data:`ASKS_CLOSE` bits of a response.

    What its handler set among the fields the server otherwise writes itself: its
    ``Server`` and ``Date`` replace the server's, and ``Connection: close`` closes the
    connection after it (RFC 9112 §9.6). 0 for a response without such fields.
    """
    if type(response) is PreparedResponse:
        return response.claims
    headers = response._headers
    if headers is None:
        return 0
    keys = headers._keys
    claims = 0
    if "server" in keys:
        claims = OWN_SERVER
    if "date" in keys:
        claims |= OWN_DATE
    if "connection" in keys and "close" in headers["connection"].lower():
        claims |= ASKS_CLOSE
    return claims


def response_head(response: Response, fixed_fields: str, framing: str, connection: str) -> bytes:
    r"""Serialise a final response's status line and header section (RFC 9112 §4, §5).

    Args:
        response: What the handler answered; its fields are written after ``Date`` and
            ``Server`` and ``Content-Type``, then the server's own framing and connection
            fields, then the empty line.
        fixed_fields: The cached ``Date``/``Server`` lines (without the ones the response
            sets itself, see :func:`claims_of`).
        framing: The framing field line: ``"Content-Length: N\r\n"``,
            ``"Transfer-Encoding: chunked\r\n"``, or ``""`` (see :func:`no_content_framing`).
        connection: ``"Connection: close\r\n"``, or the keep-alive lines.

    Raises:
        ResponseError: A status outside 200..599, or a field the handler set that cannot
            be sent: CR, LF or NUL in it, a name that is not a token, or text past U+00FF
            (field values are octets, RFC 9110 §5.5; latin-1 maps each to one).
    """
    status = response.status
    if type(status) is not int or not 200 <= status <= 599:  # check_status's rule, inline
        check_status(status)
    if (
        type(response) is PreparedResponse
        and response.content_type is None
        and response._headers is None
        and not response._encoded
    ):  # an ASGI app's response: its fields are one latin-1 text already
        line = _STATUS_LINES_11.get(status) or status_line(status)
        try:
            return f"{line}{fixed_fields}{response.fields}{framing}{connection}\r\n".encode(
                "latin-1"
            )
        except UnicodeEncodeError:
            pass  # the general path below says what is wrong
    parts = [status_line(status), fixed_fields]
    if response.content_type is not None:
        parts.append(content_type_field(response.content_type))
    if response._headers is not None:
        parts.append(encode_fields(response._headers.multi_items(), FRAMING_FIELDS))
    elif type(response) is PreparedResponse:
        parts.append(response.fields)
    if response._encoded:
        parts.append(response._encoded)
    parts.append(framing)
    parts.append(connection)
    parts.append("\r\n")
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise ResponseError(
            f"response header section holds {bad!r}, which is not latin-1 (RFC 9110 §5.5)"
        ) from exc


def switching_head(status_fields: str, response: Response, protocol: str) -> bytes:
    r"""Serialise a ``101 Switching Protocols`` head (RFC 9110 §15.2.2, §7.8).

    Args:
        status_fields: The cached ``Date``/``Server`` lines.
        response: The handler's 101; its fields are written as for any response.
        protocol: The ``Upgrade`` value: the protocol the connection switches to.

    Raises:
        ResponseError: A field that cannot be sent, or ``protocol`` holding CR or LF.
    """
    if "\n" in protocol or "\r" in protocol:
        raise ResponseError(f"Upgrade value {protocol[:64]!r} holds CR or LF")
    parts = [status_line(101), status_fields]
    if response._headers is not None:
        parts.append(encode_fields(response._headers.multi_items()))
    if response._encoded:
        parts.append(response._encoded)
    parts.append(f"Connection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n")
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"101 header section is not latin-1: {exc}") from exc


def status_line(status: int, http_version: str = "1.1") -> str:
    r"""Return the status line with CRLF, e.g. ``"HTTP/1.1 404 Not Found\r\n"``.

    Unknown codes in 200..599 get an empty reason phrase, as RFC 9112 §4 allows.
    """
    lines = _STATUS_LINES_11 if http_version == "1.1" else _STATUS_LINES_10
    line = lines.get(status)
    if line is None:
        line = f"HTTP/{http_version} {status} \r\n"
    return line


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(timestamp: float) -> str:
    """Format a POSIX timestamp as an IMF-fixdate (RFC 9110 §5.6.7), in whole seconds.

    E.g. ``"Sun, 06 Nov 1994 08:49:37 GMT"``, as ``email.utils.formatdate(timestamp,
    usegmt=True)`` writes it; computed here (the proleptic Gregorian calendar from the day
    number, H. Hinnant's ``civil_from_days``) so that serving imports neither ``email`` nor
    a clock.
    """
    days, second = divmod(int(timestamp), 86400)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    z = days + 719468  # days since 0000-03-01
    era = z // 146097
    day_of_era = z - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153  # March is 0
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = year_of_era + era * 400 + (month <= 2)
    return (
        f"{_DAY_NAMES[weekday]}, {day:02d} {_MONTH_NAMES[month - 1]} {year:04d} "
        f"{hour:02d}:{minute:02d}:{second:02d} GMT"
    )


def encode_fields(fields: list[tuple[str, str]], skip: frozenset[str] = SERVER_FIELDS) -> str:
    r"""Serialise handler-set header fields as ``Name: value\r\n`` lines.

    Fields in ``skip`` (lower case) are left out: by default those the server owns
    (Content-Length, Transfer-Encoding, Connection, Keep-Alive, Date, Server), so a handler
    cannot break the message framing; :func:`response_head` lets ``Server`` and ``Date``
    through (:data:`FRAMING_FIELDS`).

    Raises:
        ResponseError: A field name is not a token (RFC 9110 §5.1) or a value holds CR,
            LF or NUL (RFC 9110 §5.5): sending it would let the handler split the response.
    """
    lines = []
    for name, value in fields:
        if name not in _valid_names:
            if not FIELD_NAME.fullmatch(name):
                raise ResponseError(f"response header name {name[:64]!r} is not a token")
            lower = name.lower()
            if lower in skip:
                continue
            if lower not in SERVER_FIELDS and len(_valid_names) < _MAX_CACHED_NAMES:
                _valid_names.add(name)  # (a name in no skip set: always sent)
        lines.append(f"{name}: {value}\r\n")
    block = "".join(lines)
    if block.count("\n") != len(lines) or block.count("\r") != len(lines) or "\x00" in block:
        bad = next(v for _, v in fields if "\r" in v or "\n" in v or "\x00" in v)
        raise ResponseError(f"response header value {bad[:64]!r} contains CR, LF or NUL")
    return block


def no_content_framing(status: int) -> str:
    r"""The framing field of a response in :data:`NO_CONTENT_STATUSES` (no content follows).

    205 says ``Content-Length: 0`` (RFC 9110 §15.3.6 lets a server send that or close;
    this keeps the connection); 204 and 304 send no framing field at all (RFC 9110
    §8.6: a 204 must not, and a 304's would describe the 200 it stands for).
    """
    return "Content-Length: 0\r\n" if status == 205 else ""


def field_value(text: str) -> bytes:
    """A response field value as the octets that go on the wire (RFC 9110 §5.5).

    Raises:
        ResponseError: It holds CR, LF or NUL (sending it would split the response), or
            text past U+00FF (field values are octets; latin-1 maps each to one).
    """
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ResponseError(f"response header value {text[:64]!r} contains CR, LF or NUL")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"response header value {text[:64]!r} is not latin-1") from exc


def content_type_field(content_type: str) -> str:
    """Return the ``Content-Type`` line for ``content_type``.

    Raises:
        ResponseError: The value holds CR, LF or NUL.
    """
    if "\r" in content_type or "\n" in content_type or "\x00" in content_type:
        raise ResponseError(f"Content-Type {content_type[:64]!r} contains CR, LF or NUL")
    return f"Content-Type: {content_type}\r\n"


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk of chunked transfer coding (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def error_answer(
    status: int,
    reason: str,
    *,
    fixed_fields: str,
    cors: str = "",
    request_id: str | None = None,
    retry_after: bool = False,
    close: bool = True,
    head: bool = False,
) -> tuple[bytes, int]:
    r"""Build the server's own answer (a 4xx or 5xx it sends on its own, not a handler's).

    The one answer every refusal of the native server gets: :func:`error_body` as JSON,
    ``Content-Length``, then ``Retry-After: 1`` (a 503 the client may retry),
    ``X-Request-ID`` (when the request got an id, so the client's report matches the log),
    the CORS fields, and ``Connection: close``.

    Args:
        status: Status code.
        reason: The machine-readable tag (``ProtocolError.reason``).
        fixed_fields: The cached ``Date``/``Server`` lines.
        cors: Pre-formatted CORS field lines (``Events.error_fields``), or ``""``.
        request_id: Visible ASCII (``valid_request_id`` admits no other), or ``None``.
        retry_after: Add ``Retry-After: 1``.
        close: Add ``Connection: close``.
        head: Answering a HEAD request: send the fields, not the content.

    Returns:
        The bytes to write, and the content bytes among them (0 for HEAD).
    """
    body = error_body(status, reason, request_id)
    extra = "Retry-After: 1\r\n" if retry_after else ""
    if request_id is not None:
        extra += f"X-Request-ID: {request_id}\r\n"
    connection = "Connection: close\r\n" if close else ""
    text = (
        f"{status_line(status)}{fixed_fields}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}{cors}{connection}\r\n"
    )
    if head:
        return text.encode("latin-1"), 0
    return text.encode("latin-1") + body, len(body)


KEPT_ON_REPLACEMENT = frozenset(
    {
        "x-request-id",
        "vary",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "permissions-policy",
        "content-security-policy",
        "cross-origin-opener-policy",
        "cross-origin-resource-policy",
        "cross-origin-embedder-policy",
        "x-xss-protection",
    }
)
"""Fields of a refused response that its replacement 500 keeps: they say which request it
was (``X-Request-ID``), let a browser read the answer (CORS, ``Vary``) and keep the
security policy the middleware chose; nothing that describes the refused content."""


def carry_fields(original: object, replacement: Response) -> None:
    """Copy :data:`KEPT_ON_REPLACEMENT` fields of a refused response to its replacement.

    ``original`` is what the handler and middleware returned, which could not be sent
    (a field with CR, LF or NUL, a bad status, content over ``max_response_bytes``); the
    replacement is the server's 500. A kept field whose own value cannot be sent is
    skipped, and one the replacement already has is not repeated.
    """
    if not isinstance(original, Response):
        return
    for name, value in original.headers.multi_items():
        key = name.lower()
        if key not in KEPT_ON_REPLACEMENT or replacement.has_field(key):
            continue
        if "\r" in value or "\n" in value or "\x00" in value or not value.isascii():
            continue
        replacement.headers.add(name, value)


_ERROR_BODIES: dict[tuple[int, str], bytes] = {}


def error_body(status: int, reason: str, request_id: str | None = None) -> bytes:
    """The JSON content of a server-made error answer: ``{"error", "reason"[, "request_id"]}``.

    ``error`` is the reason phrase of ``status`` and ``reason`` the machine-readable tag
    (``ProtocolError.reason``); never any of the client's bytes. ``request_id`` (visible
    ASCII, as ``valid_request_id`` admits) is added when the request got one. Every path
    that answers on the server's behalf (the native server, the ASGI host, the Runtime
    under another ASGI server) sends this body.
    """
    if request_id is None:
        body = _ERROR_BODIES.get((status, reason))
        if body is not None:
            return body
    phrase = status_line(status).split(" ", 2)[2].strip()
    text = f'{{"error":"{phrase}","reason":"{reason}"'
    if request_id is not None:
        text += f',"request_id":"{request_id}"'
    body = (text + "}").encode()
    if request_id is None and len(_ERROR_BODIES) < 256:
        _ERROR_BODIES[(status, reason)] = body
    return body
