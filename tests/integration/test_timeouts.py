"""Read deadlines on a real socket: headers_timeout, body_timeout, idle_timeout (408, close).

Each test blocks on ``recv`` with a socket timeout well above the configured deadline, so
the test waits for the server's answer (or EOF) rather than for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nessen import Response
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import CLOSE_WAIT, closed_cleanly, expect_rejection
from tests.rawhttp import RawClient, get

TIMEOUT = 0.3


def _trickle(client: RawClient, data: bytes, interval: float) -> int:
    """Send ``data`` one byte per ``interval`` until the server answers; return bytes sent.

    Between bytes it waits for the socket to become readable, so it stops as soon as the
    server has written (or closed) and never sleeps blindly.
    """
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    for index in range(len(data)):
        client.send(data[index : index + 1])
        sent += 1
        client.sock.settimeout(interval)
        try:
            client.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            continue
        finally:
            client.sock.settimeout(5.0)
        return sent
    raise AssertionError("the server never answered the trickled request")


# --- headers_timeout -----------------------------------------------------------------------


def test_incomplete_header_section_gets_408(serve: ServeFactory) -> None:
    server = serve(headers_timeout=TIMEOUT)
    started = time.monotonic()
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: test\r\n")  # no blank line: the head is open
        expect_rejection(client, 408, "headers_timeout")
    assert time.monotonic() - started >= TIMEOUT


def test_header_section_trickled_slower_than_the_deadline_gets_408(
    serve: ServeFactory,
) -> None:
    server = serve(headers_timeout=TIMEOUT)
    request = get("/", extra="X-Slow: " + "s" * 100 + "\r\n")
    started = time.monotonic()
    with RawClient(server.address) as client:
        sent = _trickle(client, request, interval=0.05)
        expect_rejection(client, 408, "headers_timeout")
    assert time.monotonic() - started >= TIMEOUT
    assert sent < len(request)  # progress does not extend the deadline


def test_connection_that_sends_nothing_is_closed_without_a_response(
    serve: ServeFactory,
) -> None:
    server = serve(headers_timeout=TIMEOUT)
    started = time.monotonic()
    with RawClient(server.address) as client:
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert time.monotonic() - started >= TIMEOUT


def test_later_request_gets_headers_timeout_from_its_first_byte(serve: ServeFactory) -> None:
    server = serve(headers_timeout=TIMEOUT, idle_timeout=5.0)
    with RawClient(server.address) as client:
        assert client.request(get("/")).status == 200
        # Idle for longer than headers_timeout: idle_timeout governs, so still open.
        assert not client.closed_by_peer(timeout=2 * TIMEOUT)
        started = time.monotonic()
        client.send(b"GET / HTTP/1.1\r\n")
        expect_rejection(client, 408, "headers_timeout")
    assert time.monotonic() - started >= TIMEOUT


# --- body_timeout, body_min_rate ---------------------------------------------------------
# BODY_TIMEOUT is the longest wait for the next piece of content, and the grace period
# after which the content's average rate must stay at BODY_MIN_RATE bytes/s or above.

STEADY_TIMEOUT = 1.5
"""body_timeout for the steady uploads: each one lasts about three times as long, with
pieces every STEADY_INTERVAL seconds, far inside it even on a busy machine."""
STEADY_INTERVAL = 0.05


def _paced(client: RawClient, pieces: list[bytes], interval: float) -> None:
    """Send ``pieces`` one every ``interval`` seconds (the upload's pace, not a wait)."""
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        client.send(piece)
        time.sleep(interval)


def test_a_steady_upload_longer_than_body_timeout_is_received(serve: ServeFactory) -> None:
    server = serve(body_timeout=STEADY_TIMEOUT)
    pieces = [bytes([65 + i % 26]) * 1024 for i in range(90)]  # 90 KiB over ~4.5 s
    content = b"".join(pieces)
    with RawClient(server.address, timeout=30.0) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(content)
        )
        started = time.monotonic()
        _paced(client, pieces, STEADY_INTERVAL)
        response = client.response()
    assert time.monotonic() - started > 2 * STEADY_TIMEOUT  # it did outlast body_timeout
    assert (response.status, response.body) == (200, content)


def test_a_steady_chunked_upload_longer_than_body_timeout_is_received(
    serve: ServeFactory,
) -> None:
    server = serve(body_timeout=STEADY_TIMEOUT)
    pieces = [bytes([97 + i % 26]) * 1000 for i in range(90)]
    with RawClient(server.address, timeout=30.0) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        started = time.monotonic()
        _paced(client, [b"3e8\r\n" + piece + b"\r\n" for piece in pieces], STEADY_INTERVAL)
        client.send(b"0\r\n\r\n")
        response = client.response()
    assert time.monotonic() - started > 2 * STEADY_TIMEOUT
    assert (response.status, response.body) == (200, b"".join(pieces))


def test_a_body_that_stops_gets_408_after_body_timeout(serve: ServeFactory) -> None:
    # 100 000 bytes at once: the rate is far above body_min_rate; then nothing.
    server = serve(body_timeout=TIMEOUT, max_body_bytes=200_000)
    with RawClient(server.address) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 200000\r\n\r\n")
        client.send(b"a" * 100_000)
        stopped = time.monotonic()
        expect_rejection(client, 408, "body_timeout")
    # Not early (the server's clock is uvloop's, read once per loop pass: 50 ms of slack).
    assert time.monotonic() - stopped >= TIMEOUT - 0.05


def test_a_body_trickled_below_body_min_rate_gets_408(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A byte every 50 ms never leaves the connection silent for body_timeout (1 s), but
    # 20 bytes/s is below the 1000 bytes/s asked for once that first second has passed.
    server = serve(body_timeout=1.0, body_min_rate=1000)
    with (
        caplog.at_level(logging.INFO, logger="nessen.server"),
        RawClient(server.address) as client,
    ):
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        sent = _trickle(client, b"b" * 100, interval=0.05)
        expect_rejection(client, 408, "body_too_slow")
    assert time.monotonic() - started >= 1.0 - 0.05  # not before the grace period ended
    assert 0 < sent < 100
    (record,) = [r for r in caplog.records if r.__dict__.get("reason") == "body_too_slow"]
    assert "below body_min_rate 1000 bytes/s" in record.getMessage()


def test_a_chunked_trickle_below_body_min_rate_gets_408(serve: ServeFactory) -> None:
    # Chunk framing is not content: a chunk-size line trickled byte by byte (each read
    # adds no content) does not hold the connection.
    server = serve(body_timeout=1.0, body_min_rate=1000)
    with RawClient(server.address) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        _trickle(client, b"1\r\na\r\n" * 40, interval=0.05)
        expect_rejection(client, 408, "body_too_slow")


def test_body_min_rate_zero_leaves_only_the_wait_for_the_next_piece(
    serve: ServeFactory,
) -> None:
    server = serve(body_timeout=STEADY_TIMEOUT, body_min_rate=0)
    with RawClient(server.address, timeout=30.0) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 40\r\n\r\n")
        started = time.monotonic()
        _paced(client, [b"z"] * 40, STEADY_INTERVAL)  # 20 bytes/s for ~2 s
        response = client.response()
    assert time.monotonic() - started > STEADY_TIMEOUT
    assert (response.status, response.body) == (200, b"z" * 40)


def test_stalled_chunked_body_gets_408(serve: ServeFactory) -> None:
    server = serve(body_timeout=TIMEOUT)
    with RawClient(server.address) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
        )
        expect_rejection(client, 408, "body_timeout")


def test_body_timeout_does_not_limit_the_handler(serve: ServeFactory) -> None:
    runtime = echo_runtime()

    @runtime.route.post("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(2 * TIMEOUT)
        return Response(200, ctx.body)

    server = serve(runtime, body_timeout=TIMEOUT, headers_timeout=TIMEOUT)
    with RawClient(server.address) as client:
        response = client.request(
            b"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nok"
        )
    assert (response.status, response.body) == (200, b"ok")


# --- idle_timeout --------------------------------------------------------------------------


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(serve: ServeFactory) -> None:
    server = serve(idle_timeout=TIMEOUT)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
        answered = time.monotonic()
        assert response.status == 200
        assert response.header("connection") is None
        assert closed_cleanly(client)
        assert client.buffer == b""  # closed silently: no 408 for an idle connection
    assert time.monotonic() - answered >= TIMEOUT - 0.05  # the deadline began server-side


def test_idle_connection_stays_open_before_idle_timeout(serve: ServeFactory) -> None:
    server = serve(idle_timeout=0.5)
    with RawClient(server.address) as client:
        assert client.request(get("/")).status == 200
        assert not client.closed_by_peer(timeout=0.2)
        assert client.request(get("/")).status == 200


def test_408_for_a_head_request_has_no_content(serve: ServeFactory) -> None:
    server = serve(headers_timeout=TIMEOUT)
    with RawClient(server.address) as client:
        client.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n")
        response = client.response(head_request=True)
        assert response.status == 408
        assert response.header("connection") == "close"
        assert closed_cleanly(client)
        assert client.buffer == b""


# --- send_timeout --------------------------------------------------------------------------


def test_client_that_stops_reading_a_stream_is_cut_after_send_timeout(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = echo_runtime()
    stream_closed = threading.Event()
    times: dict[str, float] = {}

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                times["last_chunk"] = time.monotonic()
                yield b"z" * 65536
        finally:
            times["closed"] = time.monotonic()
            stream_closed.set()

    @runtime.route.get("/endless")
    async def handler(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(endless())

    server = serve(runtime, send_timeout=TIMEOUT)
    with (
        caplog.at_level(logging.INFO, logger="nessen.server"),
        RawClient(server.address) as client,
    ):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.send(get("/endless"))
        # The client reads nothing: once the buffers fill, the server must give up.
        assert stream_closed.wait(CLOSE_WAIT)
        # Cut means cut: what the server had buffered is dropped, not delivered for as long
        # as the client cares to trickle it out.
        assert _connection_ends_within(client, CLOSE_WAIT)
    # The writer stalls right after its last chunk; the deadline runs from there. (The
    # server's clock is uvloop's, cached per loop pass in whole milliseconds: 5 ms slack.)
    assert times["closed"] - times["last_chunk"] >= TIMEOUT - 0.005
    # The cause is on record: one log line and one count, both under send_timeout.
    records = [r for r in caplog.records if r.__dict__.get("reason") == "send_timeout"]
    assert len(records) == 1
    assert records[0].__dict__["path"] == "/endless"
    assert records[0].__dict__["request_id"]
    assert "send_timeout" in records[0].getMessage()
    with RawClient(server.address) as client:
        health = json.loads(client.request(get("/api/health")).body)
    assert health["requests"]["rejected"] == {"send_timeout": 1}


LARGE = 32 * 1024 * 1024
SEND_TIMEOUT = 1.0


def _large_runtime() -> Any:
    runtime = echo_runtime()
    content = b"L" * LARGE

    @runtime.route.get("/large")
    async def large(ctx):  # type: ignore[no-untyped-def]
        return Response(200, content, content_type="application/octet-stream")

    return runtime


def _read_paced(client: RawClient, piece: int, gap: float) -> int:
    """Read ``piece`` bytes at most per ``gap`` seconds until EOF; return the bytes read.

    The gap is the input here (a client that reads at a given pace), not a wait for an
    event. Headers are counted as well: the caller compares with a bound, not exactly.
    """
    client.sock.settimeout(30.0)
    total = 0
    while True:
        try:
            data = client.sock.recv(piece)
        except ConnectionResetError:
            return total
        if not data:
            return total
        total += len(data)
        time.sleep(gap)


def test_a_client_reading_a_large_response_steadily_is_not_cut_by_send_timeout(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """SEND_TIMEOUT is about a client that stops reading, not a response that takes long.

    32 MiB to a client reading 64 KiB per 5 ms (at most about 12 MiB/s) takes seconds, with
    output queued in the server all along: several times ``send_timeout``, which was the
    deadline for all of it (a 10 MB download to a phone was cut at 30 s).
    """
    server = serve(_large_runtime(), send_timeout=SEND_TIMEOUT, max_response_bytes=2 * LARGE)
    with (
        caplog.at_level(logging.INFO, logger="nessen.server"),
        RawClient(server.address, timeout=30.0) as client,
    ):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.send(b"GET /large HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = _read_paced(client, 65536, 0.005)
    assert received > LARGE  # the whole content, and its head
    assert not [r for r in caplog.records if r.__dict__.get("reason", "").startswith("send_")]


def test_a_client_reading_below_send_min_rate_is_cut(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A reader that keeps taking a little is cut once its average falls below the rate."""
    server = serve(
        _large_runtime(),
        send_timeout=SEND_TIMEOUT,
        send_min_rate=4 * 1024 * 1024,  # 4 MiB/s; the client below reads under 1 MiB/s
        max_response_bytes=2 * LARGE,
    )
    with (
        caplog.at_level(logging.INFO, logger="nessen.server"),
        RawClient(server.address, timeout=30.0) as client,
    ):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.send(b"GET /large HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = _read_paced(client, 16384, 0.02)
    assert received < LARGE
    (record,) = [r for r in caplog.records if r.__dict__.get("reason", "").startswith("send_")]
    assert record.__dict__["reason"] == "send_too_slow"
    assert record.__dict__["path"] == "/large"
    assert "send_min_rate" in record.getMessage()


def _connection_ends_within(client: RawClient, seconds: float) -> bool:
    """Read (and discard) until EOF or reset; False if still open after ``seconds``."""
    deadline = time.monotonic() + seconds
    client.sock.settimeout(seconds)
    try:
        while time.monotonic() < deadline:
            if not client.sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False
