"""The request policy: what RFC 9112/9110 and the configured limits allow, as pure checks.

Each check takes values (bytes, counts, limits) and raises
:class:`~nessen.errors.ProtocolError` carrying the status to answer and a short reason tag
for logs and metrics; each builder returns that error for a limit the caller counted. The
native server (:mod:`nessen.server.protocol`), the ASGI host and the Runtime running under
another ASGI server (:mod:`nessen.asgi`) all raise these, so a client gets the same answer
for the same fault whichever path serves it.
"""

from __future__ import annotations

import logging
import re

from nessen.errors import ProtocolError
from nessen.http import Request
from nessen.server.h1.framing import ResponseError, check_status

logger = logging.getLogger("nessen.server")

KNOWN_METHODS = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
"""The common methods' names, interned: ``KNOWN_METHODS.get(raw) or raw.decode(...)``."""
_METHOD_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Z]+")
"""A method token (RFC 9110 §9.1) without lower-case letters."""
HOST_VALUE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
"""A Host field value: uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2); may be empty."""


def _shown(raw: bytes) -> str:
    """Client bytes quoted for a log message: ``'evil.com'``, not ``b'evil.com'``."""
    return repr(raw.decode("latin-1"))


# --- the request line and header section ----------------------------------------------------


def check_version(version: str) -> None:
    """Accept HTTP/1.0 and HTTP/1.1 (``version`` as llhttp reports it, e.g. ``"1.1"``).

    Raises:
        ProtocolError: 400 ``http_0_9`` for a request line without a version; 505
            ``http_version`` for any other version (RFC 9110 §15.6.6).
    """
    if version != "1.1" and version != "1.0":
        if version == "0.9":
            raise http_0_9()
        raise ProtocolError(f"HTTP/{version} is not supported", status=505, reason="http_version")


def method_name(raw: bytes, allowed: frozenset[str] | set[str]) -> str:
    """The method of a request line, if the server implements it.

    Raises:
        ProtocolError: 501 ``method_not_implemented`` when it is not in ``allowed``
            (RFC 9110 §9.1).
    """
    method = KNOWN_METHODS.get(raw) or raw.decode("ascii", "replace")
    if method not in allowed:
        raise ProtocolError(
            f"method {method[:32]!r} is not in allowed_methods",
            status=501,
            reason="method_not_implemented",
        )
    return method


def check_host(count: int, value: bytes, version: str) -> None:
    """Check the Host fields: exactly one on HTTP/1.1, at most one on 1.0, well-formed.

    Args:
        count: How many Host fields the header section held.
        value: The last one's value.
        version: ``"1.0"`` or ``"1.1"``.

    Raises:
        ProtocolError: 400 ``missing_host``, ``duplicate_host`` (RFC 9112 §3.2) or
            ``bad_host`` (not ``host[:port]``, RFC 9110 §7.2).
    """
    if count != 1 and (version == "1.1" or count > 1):
        raise ProtocolError(
            f"{count} Host fields; HTTP/1.1 needs exactly one (RFC 9112 §3.2)",
            reason="missing_host" if count == 0 else "duplicate_host",
        )
    if count and not HOST_VALUE.fullmatch(value):
        raise ProtocolError(
            f"Host {_shown(value[:64])} is not host[:port] (RFC 9112 §3.2)", reason="bad_host"
        )


def check_transfer_coding(count: int, value: bytes, version: str) -> None:
    """Accept one ``Transfer-Encoding: chunked`` on HTTP/1.1 and nothing else.

    Raises:
        ProtocolError: 400 ``http10_transfer_encoding`` (RFC 9112 §6.1: the framing of
            such a request is faulty), 501 ``unsupported_transfer_coding`` for several
            fields or any coding but a single ``chunked``.
    """
    if version == "1.0":
        raise ProtocolError(
            "Transfer-Encoding in an HTTP/1.0 request: framing is faulty (RFC 9112 §6.1)",
            reason="http10_transfer_encoding",
        )
    if count > 1 or value.strip().lower() != b"chunked":
        raise ProtocolError(
            f"Transfer-Encoding {_shown(value[:64])}: only a single 'chunked' is supported",
            status=501,
            reason="unsupported_transfer_coding",
        )


def expects_continue(expect: bytes | None, version: str) -> bool:
    """Whether the client waits for ``100 Continue`` before sending the content.

    ``Expect`` is ignored on HTTP/1.0 (RFC 9110 §10.1.1).

    Raises:
        ProtocolError: 417 ``expectation_failed`` for any expectation but ``100-continue``.
    """
    if expect is None or version != "1.1":
        return False
    if expect.strip().lower() != b"100-continue":
        raise ProtocolError(
            f"Expect {_shown(expect[:64])} is not supported",
            status=417,
            reason="expectation_failed",
        )
    return True


def request_authority(target: bytes, host: bytes) -> bytes:
    """The authority a request names: absolute-form's own, else the Host value.

    RFC 9112 §3.2.2: a server ignores Host when the target is in absolute-form, so its
    authority (without userinfo) is what a host allowlist must judge.
    """
    if target[:1] != b"/" and target != b"*" and b"//" in target:
        return target.split(b"/", 3)[2].partition(b"?")[0].rpartition(b"@")[2]
    return host


def host_not_allowed(authority: bytes) -> ProtocolError:
    """400 ``host_not_allowed``: the request names a host outside ``allowed_hosts``."""
    return ProtocolError(
        f"Host {_shown(authority[:64])} is not in allowed_hosts", reason="host_not_allowed"
    )


def method_error(start: bytes | None) -> ProtocolError:
    """The answer to a method llhttp refuses: 501 for a method token, else 400.

    RFC 9110 §9.1: an unrecognised method gets 501. llhttp knows a fixed set of methods
    and refuses the rest, and lower-case ones, alike; ``start`` (the request's first bytes,
    ``None`` when unknown) tells a well-formed unknown method from garbage.
    """
    method = b"" if start is None else start.lstrip(b"\r\n").partition(b" ")[0]
    if _METHOD_TOKEN.fullmatch(method):
        return ProtocolError(
            f"method {_shown(method[:32])} is not implemented",
            status=501,
            reason="method_not_implemented",
        )
    return ProtocolError(
        f"malformed request: invalid method in {_shown((start or b'')[:32])}",
        reason="malformed_request",
    )


def parse_error(message: str) -> ProtocolError:
    """The answer to what llhttp refuses, from its error message.

    A well-formed but unsupported version (``HTTP/1.2``, ``HTTP/3.0``) is 505; the rest
    is a malformed request (400).
    """
    if message == "Invalid HTTP version":
        return ProtocolError(
            "HTTP version not supported (1.0 and 1.1 are)", status=505, reason="http_version"
        )
    return ProtocolError(f"malformed request: {message}", status=400, reason="malformed_request")


def bare_request_line(
    data: bytes,
    method: bytes,
    target: bytes,
    target_in_data: bool,
    began_in_data: bool,
    target_ended_before: bool = False,
) -> bool:
    r"""Whether ``data`` ends an HTTP/0.9 request line: ``METHOD target`` and its newline.

    RFC 9112 §3 requires the version; a client that omits it speaks HTTP/0.9 and sends
    no header section, so it is answered when its line ends, not after a timeout.

    Args:
        data: What was just parsed; it ends with a newline, and no header field of the
            request has been reported yet.
        method: The request's method, as the parser read it.
        target: Its request target so far.
        target_in_data: Whether part of the target came in ``data``.
        began_in_data: Whether the request began in ``data`` (after the end of an
            earlier one, whose content may run up to it with no newline between).
        target_ended_before: Whether the read before ``data`` stopped right after the
            target (a CR aside): then ``data`` holding only the newline ends the line.
    """
    line = data[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    expected = method + b" " + target
    if began_in_data:
        # The whole request line is in ``data``: with a version it would not end the
        # data, and "METHOD target " would be in it.
        return line.endswith(expected) and expected + b" " not in data
    if b"\n" in line:  # the request line ended before: this newline ends a field line
        return False
    if not line:  # only the newline: the line's end came in the read before
        return target_ended_before
    # The line began in an earlier read: ``data`` is its tail, the target's end in it.
    return target_in_data and expected.endswith(line)


def http_0_9() -> ProtocolError:
    """400 ``http_0_9``: a request line with no version; such a client sends no fields."""
    return ProtocolError("HTTP/0.9 request line", reason="http_0_9")


# --- limits -------------------------------------------------------------------------------


def uri_too_long(target_start: bytes, limit: int) -> ProtocolError:
    """414 ``uri_too_long``: the request target passed ``max_target_bytes`` (``limit``)."""
    return ProtocolError(
        f"request target is over {limit} bytes (max_target_bytes); "
        f"starts {_shown(target_start[:64])}",
        status=414,
        reason="uri_too_long",
    )


def header_too_large(size: int, limit: int) -> ProtocolError:
    """431 ``header_too_large``: ``size`` bytes so far, ``limit`` is ``max_header_bytes``."""
    return ProtocolError(
        f"request line and header section are over {limit} bytes (max_header_bytes; {size} so far)",
        status=431,
        reason="header_too_large",
    )


def too_many_headers(limit: int) -> ProtocolError:
    """431 ``too_many_headers``: more fields than ``max_header_count`` (``limit``)."""
    return ProtocolError(
        f"more than {limit} header fields (max_header_count)",
        status=431,
        reason="too_many_headers",
    )


def body_too_large(size: int, limit: int, *, declared: bool) -> ProtocolError:
    """413 ``body_too_large``: content (declared or received, in bytes) over ``limit``."""
    how = "declared Content-Length" if declared else "received content"
    return ProtocolError(
        f"{how} {size} bytes is over max_body_bytes {limit}",
        status=413,
        reason="body_too_large",
    )


def body_buffer_full(held: int, limit: int) -> ProtocolError:
    """503 ``body_buffer_full``: ``held`` bytes of content buffered server-wide already."""
    return ProtocolError(
        f"{held} bytes of request content already buffered; body_buffer_bytes is {limit}",
        status=503,
        reason="body_buffer_full",
    )


def too_many_connections(limit: int) -> ProtocolError:
    """503 ``max_connections``: more connections open than ``limit``."""
    return ProtocolError(
        f"more than {limit} connections open (max_connections)",
        status=503,
        reason="max_connections",
    )


def chunk_overhead(raw: int, content: int) -> ProtocolError:
    """400 ``chunk_overhead``: ``raw`` bytes of chunked coding carried ``content`` bytes."""
    return ProtocolError(
        f"{raw - content} bytes of chunk framing for {content} bytes of content",
        reason="chunk_overhead",
    )


# --- deadlines ------------------------------------------------------------------------------


def headers_late(timeout: float) -> ProtocolError:
    """408 ``headers_timeout``: a header section begun and not complete in ``timeout`` s."""
    return ProtocolError(
        f"header section not complete within {timeout:g} s (headers_timeout)",
        status=408,
        reason="headers_timeout",
    )


def body_deadline(
    started: float, last: float, received: int, timeout: float, min_rate: int
) -> float:
    """When content that has not arrived in full is late, as a clock value in seconds.

    ``timeout`` (``body_timeout``, seconds) is the longest wait for the next piece after
    ``last``, as nginx's ``client_body_timeout``. Once content has been arriving for
    ``timeout`` since ``started``, its average rate must also stay at ``min_rate`` bytes
    per second or above (Kestrel's ``MinRequestBodyDataRate``, ``timeout`` being its grace
    period), so a trickle that never quite stalls is still cut; 0 turns the rate off.

    Args:
        started: When the content began (the clock of the caller, seconds).
        last: When content last arrived.
        received: Content bytes received so far.
        timeout: ``body_timeout`` in seconds.
        min_rate: ``body_min_rate`` in bytes per second.
    """
    deadline = last + timeout
    if min_rate:
        by_rate = started + max(timeout, received / min_rate)
        if by_rate < deadline:
            return by_rate
    return deadline


def body_late(
    started: float, last: float, received: int, now: float, timeout: float, min_rate: int
) -> ProtocolError:
    """The 408 for content past :func:`body_deadline` (same arguments, and ``now``).

    ``body_timeout`` when the wait for the next piece ran out, ``body_too_slow`` when the
    average rate fell below ``min_rate``.
    """
    by_rate = started + max(timeout, received / min_rate) if min_rate else float("inf")
    if last + timeout <= by_rate:
        return ProtocolError(
            f"no content for {timeout:g} s (body_timeout)", status=408, reason="body_timeout"
        )
    elapsed = max(now - started, 1e-9)
    return ProtocolError(
        f"content arriving at {received / elapsed:.0f} bytes/s over {elapsed:.1f} s "
        f"({received} bytes), below body_min_rate {min_rate} bytes/s",
        status=408,
        reason="body_too_slow",
    )


# --- the response -------------------------------------------------------------------------


def check_response(status: int, size: int, limit: int) -> None:
    """Check what a handler answered before anything of it is sent.

    Args:
        status: The status code; 200..599 (1xx are the server's to send).
        size: The buffered content's size in bytes (0 for a stream).
        limit: ``max_response_bytes``.

    Raises:
        ResponseError: A status out of range, or content over the limit.
    """
    if not 200 <= status <= 599:
        check_status(status)
    if size > limit:
        raise ResponseError(f"response content is {size} bytes; max_response_bytes is {limit}")


def declared_length(value: bytes | str) -> int:
    """A response's ``Content-Length`` value as a number (RFC 9110 §8.6).

    Raises:
        ResponseError: It is not one decimal number.
    """
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ResponseError(f"response Content-Length {text[:32]!r} is not a decimal number")
    return int(text)


def content_dropped(request: Request, status: int, size: int, logged: set[tuple[int, str]]) -> None:
    """Warn that a handler gave content to a status that carries none; it is not sent.

    One line per status and route, not one per response, on the ``nessen.server``
    logger: ``logged`` holds the (status, route) pairs already named by this server (it
    stops growing at 256). ``size`` is -1 for a stream, which is not read.
    """
    key = (status, request.route or request.path)
    if key in logged or len(logged) >= 256:
        return
    logged.add(key)
    what = "a stream (not read)" if size < 0 else f"{size} bytes of content"
    logger.warning(
        "%s %s: the handler gave %s to a %d response, which carries none (RFC 9110 §15); "
        "dropped (logged once for this route and status)",
        request.method,
        key[1],
        what,
        status,
        extra={"request_id": request.id, "method": request.method, "path": request.path},
    )
