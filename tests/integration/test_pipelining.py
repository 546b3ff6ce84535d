"""Pipelined requests (RFC 9112 §9.3.2) are answered in the order they were sent."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading

import pytest

from nessen import Response, Runtime
from nessen.server.protocol import MAX_PIPELINED
from nessen.testing import LiveServer
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import closed_cleanly, no_data_within
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


def test_pipelining_past_the_queue_cap_answers_the_cap_then_closes(
    serve: ServeFactory,
) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"".join(get(f"/path?n={n}") for n in range(MAX_PIPELINED + 36)))
        responses = [client.response() for _ in range(MAX_PIPELINED)]
        assert closed_cleanly(client)
        assert client.buffer == b""  # the rest is left for the client to retry
    assert _queries(responses) == [f"n={n}" for n in range(MAX_PIPELINED)]
    assert [r.header("connection") for r in responses] == [None] * (MAX_PIPELINED - 1) + ["close"]


FLOOD_BOUND = 64 * 1024 * 1024
"""Bytes the flood may send before the client must block: loopback socket buffers hold a
few MiB, so a server that kept reading (and queueing or discarding) would pass this."""


def _flood_until_blocked(sock: socket.socket) -> int:
    """Send ever more ``GET /fast?<n>`` requests without blocking until the kernel refuses.

    Returns:
        How many requests were sent whole or in part.
    """
    sock.setblocking(False)
    sent_requests = 0
    sent_bytes = 0
    pending = b""
    while sent_bytes < FLOOD_BOUND:
        if not pending:
            pending = b"".join(
                get(f"/fast?{n}") for n in range(sent_requests, sent_requests + 4096)
            )
            sent_requests += 4096
        try:
            count = sock.send(pending)
        except BlockingIOError:
            return sent_requests
        sent_bytes += count
        pending = pending[count:]
    pytest.fail(f"the server read {sent_bytes} bytes while its pipeline was full")


def _connection_state(server: LiveServer) -> list[tuple[int, bool]]:
    """``(queued requests, reading paused)`` of each open connection, read on the loop."""
    found: list[tuple[int, bool]] = []

    def read() -> None:
        for conn in server.runtime.server.state.connections:  # type: ignore[union-attr]
            found.append((len(conn._queue), conn._reading_paused))

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
        assert sent > MAX_PIPELINED
        # Blocked, and still blocked: the server is not reading (and discarding) our bytes,
        # or the socket would become writable again as its receive buffer drained.
        _, writable, _ = select.select([], [client.sock], [], 0.5)
        assert writable == []
        # The first read held far more than the cap (one loopback segment is ~64 KiB), so
        # parsing stopped at the cap and nothing beyond it is held as requests.
        assert _connection_state(server) == [(MAX_PIPELINED, True)]
        assert order == ["slow started"]
        client.sock.setblocking(True)
        client.sock.settimeout(5.0)
        server.call(release.set)
        responses = [client.response() for _ in range(1 + MAX_PIPELINED)]
        client.sock.shutdown(socket.SHUT_WR)  # the rest of the flood is never answered
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert [r.body for r in responses] == [b"slow"] + [b"fast %d" % n for n in range(MAX_PIPELINED)]
    assert [r.header("connection") for r in responses] == [None] * MAX_PIPELINED + ["close"]
    assert order == ["slow started", "slow finished"] + [f"fast {n}" for n in range(MAX_PIPELINED)]
