"""Shared assertions for the real-socket protocol tests."""

from __future__ import annotations

import json
import socket
from typing import Any

from tests.rawhttp import RawClient, RawResponse

CLOSE_WAIT = 3.0
"""Seconds to wait for the server to close a connection it must close (well above any
timeout the tests configure, and above the 2 s lingering close)."""

PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def json_body(response: RawResponse) -> Any:
    assert response.header("content-type") == "application/json"
    return json.loads(response.body)


def expect_rejection(
    client: RawClient,
    status: int,
    reason: str,
    *,
    retry_after: str | None = None,
    request_id: str | None = None,
) -> RawResponse:
    """Read a server-made error response, then check that the server closed the connection.

    The response must be ``status`` with ``Connection: close``, the JSON body
    ``{"error": <phrase>, "reason": <reason>}`` (plus ``"request_id"`` and an
    ``X-Request-ID`` field when ``request_id`` is given: a refusal after the request reached
    the app), ``Retry-After`` exactly ``retry_after``, and nothing may follow it before EOF.
    """
    response = client.response()
    assert response.status == status
    assert response.version == "HTTP/1.1"
    assert response.reason == PHRASES[status]
    assert response.header("connection") == "close"
    assert response.header("retry-after") == retry_after
    assert response.header("content-length") == str(len(response.body))
    expected = {"error": PHRASES[status], "reason": reason}
    if request_id is not None:
        expected["request_id"] = request_id
    assert response.header("x-request-id") == request_id
    assert json_body(response) == expected
    assert closed_cleanly(client)
    assert client.buffer == b""
    return response


def closed_cleanly(client: RawClient, timeout: float = CLOSE_WAIT) -> bool:
    """True when the server half-closes (FIN) within ``timeout``, without a reset.

    A reset would mean the server closed with our bytes unread, which can destroy its
    response in the client's receive buffer; the lingering close exists to avoid that.
    Bytes that arrive first are kept in ``client.buffer``.
    """
    client.sock.settimeout(timeout)
    try:
        while True:
            chunk = client.sock.recv(65536)
            if not chunk:
                return True
            client.buffer += chunk
    except (TimeoutError, ConnectionResetError):
        return False
    finally:
        client.sock.settimeout(5.0)


def no_data_within(client: RawClient, seconds: float) -> bool:
    """True when nothing (neither bytes nor EOF) arrives within ``seconds``.

    Used only to check that a response is *not* sent while the server is blocked on
    something the test controls; it never stands in for waiting on an event.
    """
    client.sock.settimeout(seconds)
    try:
        client.sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    finally:
        client.sock.settimeout(5.0)
    return False
