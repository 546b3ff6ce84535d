"""Pipelined requests (RFC 9112 §9.3.2) are answered in the order they were sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
import time
from typing import Any

import pytest

from nessen import Config, Response, Runtime
from nessen.asgi import ASGIHost
from nessen.server.h1.connection import FEED_SLICE, PIPELINE_DEPTH
from nessen.testing import LiveServer
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import closed_cleanly, expect_rejection, no_data_within
from tests.rawhttp import RawClient, RawResponse, get


def _queries(responses: list[RawResponse]) -> list[str]:
    assert [r.status for r in responses] == [200] * len(responses)
    return [json.loads(r.body)["query"] for r in responses]


def _post(body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def test_three_requests_in_one_write_are_answered_in_order(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(get("/path?n=1") + get("/path?n=2") + get("/path?n=3"))
        responses = [client.response() for _ in range(3)]
        assert no_data_within(client, 0.1)
    assert _queries(responses) == ["n=1", "n=2", "n=3"]


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 13, 64])
def test_pipelined_bytes_split_anywhere_get_the_same_answers(
    serve: ServeFactory, piece: int
) -> None:
    stream = get("/path?n=1") + _post(b"hello world") + get("/path?n=3")
    server = serve()
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(stream), piece):
            client.send(stream[start : start + piece])
        first, second, third = (client.response() for _ in range(3))
    assert json.loads(first.body)["query"] == "n=1"
    assert (second.status, second.body) == (200, b"hello world")
    assert json.loads(third.body)["query"] == "n=3"


def test_pipelined_posts_with_bodies_keep_their_own_content(serve: ServeFactory) -> None:
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    server = serve()
    with RawClient(server.address) as client:
        client.send(_post(b"first") + chunked + _post(b"") + _post(b"last"))
        bodies = [client.response().body for _ in range(4)]
    assert bodies == [b"first", b"abc", b"", b"last"]


def _blocking_runtime(
    entered: threading.Event, release: asyncio.Event
) -> tuple[Runtime, list[str]]:
    runtime = echo_runtime()
    order: list[str] = []

    @runtime.route.get("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        order.append("slow started")
        entered.set()
        await release.wait()
        order.append("slow finished")
        return Response.text("slow")

    @runtime.route.get("/fast")
    async def fast(ctx):  # type: ignore[no-untyped-def]
        order.append(f"fast {ctx.query_string.decode()}")
        return Response.text(f"fast {ctx.query_string.decode()}")

    return runtime, order


def test_fast_requests_behind_a_waiting_handler_wait_their_turn(serve: ServeFactory) -> None:
    entered, release = threading.Event(), asyncio.Event()
    runtime, order = _blocking_runtime(entered, release)
    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow") + get("/fast?1") + get("/fast?2") + get("/fast?3"))
        assert entered.wait(5.0)
        assert no_data_within(client, 0.1)  # the fast answers must not overtake
        server.call(release.set)
        bodies = [client.response().body for _ in range(4)]
    assert bodies == [b"slow", b"fast 1", b"fast 2", b"fast 3"]
    assert order == ["slow started", "slow finished", "fast 1", "fast 2", "fast 3"]


def test_handler_that_sleeps_first_is_still_answered_first(serve: ServeFactory) -> None:
    runtime = echo_runtime()

    @runtime.route.get("/sleep")
    async def sleep(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        return Response.text("slept")

    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/sleep") + get("/path?n=2") + get("/sleep") + get("/path?n=4"))
        responses = [client.response() for _ in range(4)]
    assert [r.body for r in responses[::2]] == [b"slept", b"slept"]
    assert _queries(responses[1::2]) == ["n=2", "n=4"]


def test_pipelined_requests_after_a_close_request_are_not_served(serve: ServeFactory) -> None:
    entered, release = threading.Event(), asyncio.Event()
    runtime, order = _blocking_runtime(entered, release)
    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow", extra="Connection: close\r\n") + get("/fast?1"))
        assert entered.wait(5.0)
        server.call(release.set)
        response = client.response()
        assert (response.body, response.header("connection")) == (b"slow", "close")
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert order == ["slow started", "slow finished"]


def test_malformed_request_behind_good_ones_is_answered_after_them(
    serve: ServeFactory,
) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(
            get("/path?n=1")
            + get("/path?n=2")
            + b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"
        )
        first, second, error = (client.response() for _ in range(3))
        assert closed_cleanly(client)
    assert _queries([first, second]) == ["n=1", "n=2"]
    assert first.header("connection") is None
    assert (error.status, error.header("connection")) == (400, "close")
    assert json.loads(error.body) == {"error": "Bad Request", "reason": "malformed_request"}


def test_requests_queued_before_the_client_half_closes_are_all_answered(
    serve: ServeFactory,
) -> None:
    entered, release = threading.Event(), asyncio.Event()
    runtime, order = _blocking_runtime(entered, release)
    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow") + get("/fast?1") + get("/fast?2"))
        client.sock.shutdown(socket.SHUT_WR)
        assert entered.wait(5.0)
        server.call(release.set)
        bodies = [client.response().body for _ in range(3)]
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert bodies == [b"slow", b"fast 1", b"fast 2"]
    assert order == ["slow started", "slow finished", "fast 1", "fast 2"]


def test_close_after_a_response_ends_in_fin_even_with_unread_input(
    serve: ServeFactory,
) -> None:
    # RFC 9112 §9.6: closing with the client's bytes unread resets the connection, which
    # can destroy the last response; the server half-closes and drains instead.
    entered, release = threading.Event(), asyncio.Event()
    runtime, order = _blocking_runtime(entered, release)
    server = serve(runtime, max_requests_per_connection=1)
    with RawClient(server.address) as client:
        client.send(get("/slow"))
        assert entered.wait(5.0)
        client.send(get("/fast?1") * 20_000)  # reading pauses while these wait their turn
        server.call(release.set)
        response = client.response()
        assert (response.body, response.header("connection")) == (b"slow", "close")
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert order == ["slow started", "slow finished"]


def test_a_hundred_pipelined_requests_in_one_write_get_a_hundred_answers_in_order(
    serve: ServeFactory,
) -> None:
    # No cap-then-close: parsing stops when the queue is full and resumes as answers go out.
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"".join(get(f"/path?n={n}") for n in range(100)))
        responses = [client.response() for _ in range(100)]
        after = client.request(get("/path?n=after"))  # and the connection lives on
    assert _queries(responses) == [f"n={n}" for n in range(100)]
    assert [r.header("connection") for r in responses] == [None] * 100
    assert _queries([after]) == ["n=after"]


FLOOD_BOUND = 64 * 1024 * 1024
"""Bytes the flood may send before the client must block: loopback socket buffers hold a
few MiB, so a server that kept reading (and queueing or discarding) would pass this."""


def _flood_until_blocked(sock: socket.socket, path: str = "/fast") -> int:
    """Send ever more ``GET <path>?<n>`` requests without blocking until the kernel refuses.

    Every request has the same length (``n`` has eight digits).

    Returns:
        How many requests were sent whole.
    """
    size = len(get(f"{path}?{0:08d}"))
    sock.setblocking(False)
    generated = 0
    sent_bytes = 0
    pending = b""
    while sent_bytes < FLOOD_BOUND:
        if not pending:
            pending = b"".join(get(f"{path}?{n:08d}") for n in range(generated, generated + 4096))
            generated += 4096
        try:
            count = sock.send(pending)
        except BlockingIOError:
            return sent_bytes // size
        sent_bytes += count
        pending = pending[count:]
    pytest.fail(f"the server read {sent_bytes} bytes while its pipeline was full")


QUEUE_BOUND = PIPELINE_DEPTH + FEED_SLICE // len(get("/fast?00000000"))
"""Requests a connection may hold parsed: the queue's depth, plus what one slice of input
fed to the parser can complete past it."""


def _connection_state(server: LiveServer) -> list[tuple[int, bool]]:
    """``(queued requests, reading paused)`` of each open connection, read on the loop."""
    found: list[tuple[int, bool]] = []

    def read() -> None:
        for conn in server.runtime.server.state.connections:  # type: ignore[union-attr]
            found.append((len(conn.core.queue), conn._reading_paused))

    server.call(read)
    return found


def test_reading_pauses_while_a_handler_waits_and_the_queue_stays_bounded(
    serve: ServeFactory,
) -> None:
    entered, release = threading.Event(), asyncio.Event()
    runtime, order = _blocking_runtime(entered, release)
    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow"))
        assert entered.wait(5.0)
        sent = _flood_until_blocked(client.sock)
        assert sent > 10 * QUEUE_BOUND
        # Blocked, and still blocked: the server is not reading (and discarding) our bytes,
        # or the socket would become writable again as its receive buffer drained.
        _, writable, _ = select.select([], [client.sock], [], 0.5)
        assert writable == []
        # The first read held far more than the queue (one loopback read is ~64 KiB), so
        # parsing stopped and the rest of that read waits unparsed.
        [(queued, paused)] = _connection_state(server)
        assert PIPELINE_DEPTH <= queued <= QUEUE_BOUND
        assert paused
        assert order == ["slow started"]
        client.sock.setblocking(True)
        client.sock.settimeout(10.0)
        server.call(release.set)
        # Far more answers than the queue holds: parsing and reading resumed as they went.
        answered = 10 * QUEUE_BOUND
        responses = [client.response() for _ in range(1 + answered)]
    assert [r.body for r in responses] == [b"slow"] + [b"fast %08d" % n for n in range(answered)]
    assert [r.header("connection") for r in responses] == [None] * (1 + answered)
    assert order[:3] == ["slow started", "slow finished", "fast 00000000"]


def test_a_pipelining_client_that_never_reads_is_dropped_after_send_timeout(
    serve: ServeFactory,
) -> None:
    # Thousands of pipelined requests, none of the answers read: the server's writes stay
    # queued, so it stops answering, parsing and reading (the kernel's buffers fill on
    # both sides); memory stays at the queue's bound, and SEND_TIMEOUT ends it.
    runtime = echo_runtime()

    @runtime.route.get("/big")
    async def big(ctx):  # type: ignore[no-untyped-def]
        return Response(200, b"b" * 65536)

    server = serve(runtime, send_timeout=1.0)
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = _flood_until_blocked(client.sock, "/big")
        assert sent > 10 * QUEUE_BOUND
        states = _connection_state(server)
        assert all(queued <= QUEUE_BOUND for queued, _ in states), states
        _wait_for_connections(server, 0)  # FREED_WITHIN (5 s) covers the 1 s send timeout


# --- pipelined uploads: every request answered, no connection left behind ----------------

UPLOADS = [
    pytest.param(3, 200_000, id="3x200KB"),
    pytest.param(10, 100_000, id="10x100KB"),
    pytest.param(3, 1_000_000, id="3x1MB"),
]
"""Pipelined uploads sent in one write: whole requests and the seams between them then
arrive in reads of any size, one read holding the end of a body, a whole request and the
start of the next body."""

FREED_WITHIN = 5.0
"""Seconds within which the server must forget a connection the client has closed."""


def _upload_runtime() -> Runtime:
    runtime = echo_runtime()

    @runtime.route.post("/upload")
    async def upload(ctx):  # type: ignore[no-untyped-def]
        return Response.text(str(len(ctx.body)))

    return runtime


def _uploads(path: str, count: int, size: int) -> tuple[bytes, list[int]]:
    """``count`` pipelined Content-Length uploads to ``path``, each a different size."""
    sizes = [size - n for n in range(count)]  # a request answered out of turn shows
    data = b"".join(
        b"POST %b HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%b"
        % (path.encode(), length, bytes([97 + n % 26]) * length)
        for n, length in enumerate(sizes)
    )
    return data, sizes


def _connection_count(server: LiveServer) -> int:
    return server.runtime.server.connection_count  # type: ignore[union-attr]


def _wait_for_connections(server: LiveServer, count: int) -> None:
    """Poll the server's connection registry until it holds ``count`` connections."""
    deadline = time.monotonic() + FREED_WITHIN
    while _connection_count(server) != count:
        assert time.monotonic() < deadline, f"{_connection_count(server)} connections open"
        time.sleep(0.01)


@pytest.mark.parametrize("half_close", [False, True], ids=["close", "half_close"])
@pytest.mark.parametrize(
    ("path", "status"), [("/upload", 200), ("/nowhere", 404)], ids=["reads_body", "not_found"]
)
@pytest.mark.parametrize(("count", "size"), UPLOADS)
def test_pipelined_uploads_are_all_answered_and_the_connection_freed(
    serve: ServeFactory,
    count: int,
    size: int,
    path: str,
    status: int,
    half_close: bool,
) -> None:
    server = serve(_upload_runtime())
    baseline = _connection_count(server)
    data, sizes = _uploads(path, count, size)
    with RawClient(server.address) as client:
        client.send(data)
        if half_close:  # the client is done sending: the server answers all, then closes
            client.sock.shutdown(socket.SHUT_WR)
        responses = [client.response() for _ in range(count)]
        if half_close:
            assert closed_cleanly(client)
        else:
            assert no_data_within(client, 0.1)
        assert client.buffer == b""
    assert [r.status for r in responses] == [status] * count
    if status == 200:
        assert [r.body for r in responses] == [str(n).encode() for n in sizes]
    # Kept alive throughout (after a half-close, the last may say close: it depends on
    # whether the end of input was read before that response was written).
    assert [r.header("connection") for r in responses[:-1]] == [None] * (count - 1)
    assert responses[-1].header("connection") in (("close", None) if half_close else (None,))
    _wait_for_connections(server, baseline)


def test_pipelined_chunked_uploads_are_not_taken_for_chunk_overhead(
    serve: ServeFactory,
) -> None:
    piece = b"x" * 16_000
    body = b"%x\r\n%b\r\n" % (len(piece), piece) * 20 + b"0\r\n\r\n"
    upload = b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    length, _ = _uploads("/upload", 1, 320_000)
    server = serve(_upload_runtime())
    with RawClient(server.address) as client:
        client.send(upload + length + upload + length + upload)
        responses = [client.response() for _ in range(5)]
    assert [(r.status, r.body) for r in responses] == [(200, b"320000")] * 5
    _wait_for_connections(server, 0)


def test_chunk_framing_flood_behind_a_pipelined_request_is_still_refused(
    serve: ServeFactory,
) -> None:
    flood = (
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1\r\na\r\n" * 200_000
        + b"0\r\n\r\n"
    )
    server = serve(_upload_runtime())
    with RawClient(server.address) as client:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(get("/path?n=1") + flood)  # may be refused while we still send
        first = client.response()
        assert json.loads(first.body)["query"] == "n=1"
        expect_rejection(client, 400, "chunk_overhead")
    _wait_for_connections(server, 0)


def test_an_error_found_in_the_read_that_queued_a_request_follows_its_answer(
    serve: ServeFactory,
) -> None:
    # One read holds a whole request and a header section already past its raw-byte
    # bound: the request, queued in that read with no handler running yet, is answered,
    # then the 431, then the close.
    server = serve(max_header_bytes=256, max_target_bytes=128)
    with RawClient(server.address) as client:
        client.send(get("/path?n=1") + b"GET / HTTP/1.1\r\nHost: test\r\nX-Long: " + b"a" * 16384)
        first = client.response()
        assert json.loads(first.body)["query"] == "n=1"
        expect_rejection(client, 431, "header_too_large")
    _wait_for_connections(server, 0)


def test_uploads_pipelined_behind_a_slow_handler_are_not_timed_out(serve: ServeFactory) -> None:
    # Reading pauses while requests wait their turn, with the start of the next upload
    # already read: the server is the slow one then, so that upload's body deadline stops
    # until reading resumes.
    runtime = _upload_runtime()

    @runtime.route.get("/slow")
    async def slow(ctx):  # type: ignore[no-untyped-def]
        await asyncio.sleep(1.0)  # well past the deadlines below
        return Response.text("slow")

    server = serve(runtime, headers_timeout=0.3, body_timeout=0.3)
    data, sizes = _uploads("/upload", 3, 300_000)
    with RawClient(server.address) as client:
        client.send(get("/slow") + get("/path?n=1") + data)
        responses = [client.response() for _ in range(5)]
        assert no_data_within(client, 0.1)
    assert [(r.status, r.body) for r in responses] == [(200, b"slow")] + [
        (200, b'{"path":"/path","query":"n=1"}')
    ] + [(200, str(n).encode()) for n in sizes]
    assert [r.header("connection") for r in responses] == [None] * 5


# --- the same through the streaming mode (the ASGI host) ----------------------------------


async def _asgi_upload_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/upload`` reads its content and answers its size; ``/slow`` answers after 1 s; any
    other path 404s unread."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    status, size = 404, 0
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
        status = 200
    if scope["path"] == "/upload":
        status, more = 200, True
        while more:
            message = await receive()
            size += len(message["body"])
            more = message["more_body"]
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.mark.parametrize("half_close", [False, True], ids=["close", "half_close"])
@pytest.mark.parametrize(("count", "size"), UPLOADS)
def test_pipelined_uploads_read_by_an_asgi_app_are_all_answered(
    count: int, size: int, half_close: bool
) -> None:
    data, sizes = _uploads("/upload", count, size)
    with LiveServer(ASGIHost(_asgi_upload_app, Config())) as server:
        with RawClient(server.address) as client:
            client.send(data)
            if half_close:
                client.sock.shutdown(socket.SHUT_WR)
            responses = [client.response() for _ in range(count)]
            if half_close:
                assert closed_cleanly(client)
            else:
                assert no_data_within(client, 0.1)
            assert client.buffer == b""
        assert [(r.status, r.body) for r in responses] == [(200, str(n).encode()) for n in sizes]
        _wait_for_connections(server, 0)


@pytest.mark.parametrize(("count", "size"), UPLOADS)
def test_pipelined_uploads_an_asgi_app_does_not_read_end_in_a_close(count: int, size: int) -> None:
    # A request answered before its content is all in gets Connection: close and nothing
    # after it is parsed; one whose content was in already is kept alive. Which happens
    # depends on the reads, so: 404s up to a close or to the last request, then a FIN.
    data, _ = _uploads("/nowhere", count, size)
    with LiveServer(ASGIHost(_asgi_upload_app, Config())) as server:
        with RawClient(server.address) as client:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.send(data)  # the lingering close may end before we are done
                client.sock.shutdown(socket.SHUT_WR)
            responses = [client.response()]
            while responses[-1].header("connection") != "close" and len(responses) < count:
                responses.append(client.response())
            assert closed_cleanly(client)
            assert client.buffer == b""
        assert [(r.status, r.body) for r in responses] == [(404, b"0")] * len(responses)
        assert [r.header("connection") for r in responses[:-1]] == [None] * (len(responses) - 1)
        _wait_for_connections(server, 0)


def test_uploads_pipelined_behind_a_slow_asgi_app_are_not_timed_out() -> None:
    data, sizes = _uploads("/upload", 3, 300_000)
    config = Config(headers_timeout=0.3, body_timeout=0.3)
    with (
        LiveServer(ASGIHost(_asgi_upload_app, config)) as server,
        RawClient(server.address) as client,
    ):
        client.send(get("/slow") + get("/slow") + data)
        responses = [client.response() for _ in range(5)]
        assert no_data_within(client, 0.1)
    assert [(r.status, r.body) for r in responses] == [(200, b"0")] * 2 + [
        (200, str(n).encode()) for n in sizes
    ]
    assert [r.header("connection") for r in responses] == [None] * 5
