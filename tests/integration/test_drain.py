"""What each connection gets while the server drains: raw bytes, an in-process server.

The drain is started with ``LiveServer.stop`` in a thread; handlers wait on events the test
sets, so "in flight when the drain began" holds by construction, not by timing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable

from nessen import Response, Runtime
from nessen.server import DrainResult
from nessen.server.h1.connection import DRAIN_IDLE_GRACE, LINGER_SECONDS
from nessen.testing import LiveServer
from tests.conftest import ServeFactory
from tests.integration.wire import closed_cleanly
from tests.rawhttp import RawClient, get

WAIT = 5.0
"""Seconds to wait for anything the test expects to happen promptly."""
STOP_JOIN = 10.0
"""Seconds to wait for a drain that must end long before its grace period."""


def _poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.005)


class Gated:
    """A runtime whose ``/slow`` handler and ``/stream`` stream wait for ``release``.

    ``/slow`` answers ``slow`` once released; ``/stream`` sends ``first``, then ``second``
    once released; ``/fast`` answers ``fast`` at once.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = asyncio.Event()  # binds to the server's loop on first use
        self.runtime = Runtime(access_log=False)
        gate = self

        @self.runtime.route.get("/slow")
        async def slow(ctx):  # type: ignore[no-untyped-def]
            gate.entered.set()
            await gate.release.wait()
            return Response.text("slow")

        @self.runtime.route.get("/fast")
        async def fast(ctx):  # type: ignore[no-untyped-def]
            return Response.text("fast")

        async def pieces() -> AsyncIterator[bytes]:
            yield b"first"
            gate.entered.set()
            await gate.release.wait()
            yield b"second"

        @self.runtime.route.get("/stream")
        async def stream(ctx):  # type: ignore[no-untyped-def]
            return Response.streaming(pieces(), content_type="text/plain")


def _drain_in_background(server: LiveServer, grace_period: float) -> threading.Thread:
    """Start ``server.stop(grace_period)`` in a thread; return once the server drains."""
    thread = threading.Thread(target=server.stop, args=(grace_period,), daemon=True)
    thread.start()
    _poll(
        lambda: server.runtime.server is not None and server.runtime.server.draining,
        "the server began draining",
    )
    return thread


def _queued(server: LiveServer) -> int:
    """Requests waiting behind a busy one, over all connections (read on the server's loop)."""
    found: list[int] = []

    def count() -> None:
        state = server.runtime.server.state  # type: ignore[union-attr]
        found.append(sum(len(conn.core.queue) for conn in state.connections))

    server.call(count)
    return found[0]


def _receiving(server: LiveServer) -> bool:
    """Whether some connection has part of a request in its parser (read on the server's loop)."""
    found: list[bool] = []

    def check() -> None:
        state = server.runtime.server.state  # type: ignore[union-attr]
        found.append(any(conn.core.in_message for conn in state.connections))

    server.call(check)
    return found[0]


def test_a_request_pipelined_behind_an_in_flight_one_is_answered(serve: ServeFactory) -> None:
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow") + get("/fast"))
        assert gated.entered.wait(WAIT)
        _poll(lambda: _queued(server) == 1, "the second request was queued")
        stopping = _drain_in_background(server, grace_period=30.0)
        server.call(gated.release.set)
        first, second = client.response(), client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive()
    assert (first.status, first.body) == (200, b"slow")
    # Not "close": RFC 9112 §9.6 forbids answering anything after a close response, and
    # the request behind it was sent before the drain. The last response closes.
    assert first.header("connection") is None
    assert (second.status, second.body, second.header("connection")) == (200, b"fast", "close")
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_request_pipelined_after_the_drain_began_gets_503_and_close(
    serve: ServeFactory,
) -> None:
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=30.0)
        client.send(get("/fast"))
        _poll(lambda: _queued(server) == 1, "the second request was queued")
        server.call(gated.release.set)
        first, second = client.response(), client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive()
    assert (first.status, first.body, first.header("connection")) == (200, b"slow", None)
    assert second.status == 503
    assert second.header("connection") == "close"
    assert second.header("retry-after") == "1"
    assert second.body == b'{"error":"Service Unavailable","reason":"draining"}'
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_request_begun_before_the_drain_is_answered_once_complete(
    serve: ServeFactory,
) -> None:
    gated = Gated()
    server = serve(gated.runtime)
    second_request = get("/fast")
    with RawClient(server.address) as client:
        client.send(get("/slow") + second_request[:10])
        assert gated.entered.wait(WAIT)
        _poll(lambda: _receiving(server), "the second request began arriving")
        stopping = _drain_in_background(server, grace_period=30.0)
        server.call(gated.release.set)
        first = client.response()
        client.send(second_request[10:])
        second = client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive()
    assert (first.status, first.body, first.header("connection")) == (200, b"slow", None)
    assert (second.status, second.body, second.header("connection")) == (200, b"fast", "close")
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_request_begun_after_the_drain_does_not_hold_the_connection_open(
    serve: ServeFactory,
) -> None:
    # Otherwise a client that keeps pipelining could keep a draining connection open until
    # the deadline. The unfinished request is left for the client to retry (RFC 9112 §9.3.1).
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=30.0)
        client.send(get("/fast")[:10])
        _poll(lambda: _receiving(server), "the second request began arriving")
        server.call(gated.release.set)
        first = client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive()
    assert (first.status, first.body, first.header("connection")) == (200, b"slow", "close")
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_stream_begun_before_the_drain_is_closed_when_it_ends(serve: ServeFactory) -> None:
    # Its head went out before the drain, without "Connection: close": the connection goes
    # back to idle when the stream ends, and the drain must close it then, not wait for
    # its grace period and count it as aborted.
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/stream"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=30.0)
        server.call(gated.release.set)
        response = client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive(), "the drain waited out its grace period"
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("connection") is None
    assert response.body == b"firstsecond"
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_lingering_close_at_the_drain_deadline_is_not_an_aborted_connection(
    serve: ServeFactory,
) -> None:
    # The grace period ends while the close after the response still lingers (the client
    # keeps its end open): the response is whole, so nothing was cut.
    grace = LINGER_SECONDS / 2
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=grace)
        server.call(gated.release.set)
        response = client.response()
        stopping.join(STOP_JOIN)
        assert not stopping.is_alive()
        assert closed_cleanly(client)  # FIN, never a reset
        assert client.buffer == b""
    assert (response.status, response.body, response.header("connection")) == (
        200,
        b"slow",
        "close",
    )
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_connection_still_writing_at_the_drain_deadline_is_counted(
    serve: ServeFactory,
) -> None:
    # The other side of the rule above: a stream still running is cut and its connection
    # aborted, and both are counted.
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/stream"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=0.5)
        stopping.join(STOP_JOIN)
        assert not stopping.is_alive()
        assert client.closed_by_peer(timeout=WAIT)
    assert server.result == DrainResult(cut=1, connections=1)


def test_a_request_on_a_connection_idle_when_the_drain_began_is_served_with_close(
    serve: ServeFactory,
) -> None:
    # A keep-alive client sending back to back has its next request on the wire when the
    # drain begins: it must be answered, not refused with 503 or crossed by a close.
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as idle, RawClient(server.address) as busy:
        before = idle.request(get("/fast"))
        assert (before.status, before.header("connection")) == (200, None)
        busy.send(get("/slow"))  # keeps the drain going while the idle one is used
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=30.0)
        during = idle.request(get("/fast"))
        assert (during.status, during.body, during.header("connection")) == (200, b"fast", "close")
        assert closed_cleanly(idle)
        server.call(gated.release.set)
        assert busy.response().status == 200
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive()
    assert server.result == DrainResult(cut=0, connections=0)


def test_a_connection_idle_through_the_drain_grace_is_closed_after_it(
    serve: ServeFactory,
) -> None:
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as idle, RawClient(server.address) as busy:
        assert idle.request(get("/fast")).status == 200
        busy.send(get("/slow"))
        assert gated.entered.wait(WAIT)
        started = time.monotonic()
        stopping = _drain_in_background(server, grace_period=30.0)
        assert closed_cleanly(idle, timeout=WAIT)  # a FIN, with nothing sent first
        took = time.monotonic() - started
        assert idle.buffer == b""
        assert DRAIN_IDLE_GRACE - 0.05 <= took < DRAIN_IDLE_GRACE + 2.0
        server.call(gated.release.set)
        assert busy.response().status == 200
    stopping.join(STOP_JOIN)
    assert server.result == DrainResult(cut=0, connections=0)


# --- moving clients off before the drain, and the answer at its deadline ------------------


def test_during_shutdown_delay_keep_alive_answers_say_close_and_new_clients_are_served(
    serve: ServeFactory,
) -> None:
    # SHUTDOWN_DELAY: readiness already says 503 and the load balancer is taking the pod
    # out; each persistent connection's next answer says close so its client reconnects
    # elsewhere, while connections still routed here are served.
    gated = Gated()
    server = serve(gated.runtime, shutdown_delay=3.0)
    with RawClient(server.address) as kept:
        before = kept.request(get("/fast"))
        assert (before.status, before.header("connection")) == (200, None)
        stopping = threading.Thread(target=server.stop, args=(30.0,), daemon=True)
        stopping.start()
        _poll(
            lambda: (
                server.runtime.server is not None and server.runtime.server.state.shutdown_pending
            ),
            "the shutdown was announced",
        )
        assert not server.runtime.server.draining  # type: ignore[union-attr]
        during = kept.request(get("/fast"))
        assert (during.status, during.body, during.header("connection")) == (200, b"fast", "close")
        assert closed_cleanly(kept)
    with RawClient(server.address) as fresh:  # the listener is still open in the delay
        answer = fresh.request(get("/fast"))
    assert (answer.status, answer.header("connection")) == (200, "close")
    stopping.join(STOP_JOIN)
    assert not stopping.is_alive()
    assert server.result == DrainResult(cut=0, connections=0)


def test_pipelined_requests_in_the_delay_are_all_answered_the_last_saying_close(
    serve: ServeFactory,
) -> None:
    gated = Gated()
    server = serve(gated.runtime, shutdown_delay=3.0)
    with RawClient(server.address) as client:
        assert client.request(get("/fast")).status == 200
        stopping = threading.Thread(target=server.stop, args=(30.0,), daemon=True)
        stopping.start()
        _poll(
            lambda: (
                server.runtime.server is not None and server.runtime.server.state.shutdown_pending
            ),
            "the shutdown was announced",
        )
        client.send(get("/fast") * 3)
        answers = [client.response() for _ in range(3)]
        assert closed_cleanly(client)
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.header("connection") for a in answers] == [None, None, "close"]
    stopping.join(STOP_JOIN)


def test_a_request_whose_response_has_not_begun_at_the_deadline_gets_503_and_close(
    serve: ServeFactory,
) -> None:
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as client:
        client.send(get("/slow", extra="X-Request-ID: at-the-deadline\r\n"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=0.5)
        response = client.response()
        assert closed_cleanly(client)
        stopping.join(STOP_JOIN)
    assert response.status == 503
    assert response.header("retry-after") == "1"
    assert response.header("connection") == "close"
    assert response.header("x-request-id") == "at-the-deadline"
    assert json.loads(response.body) == {
        "error": "Service Unavailable",
        "reason": "shutdown_cut",
        "request_id": "at-the-deadline",
    }
    assert server.result == DrainResult(cut=1, connections=1)


def test_the_drain_result_counts_what_was_served_during_it(serve: ServeFactory) -> None:
    gated = Gated()
    server = serve(gated.runtime)
    with RawClient(server.address) as busy, RawClient(server.address) as other:
        assert other.request(get("/fast")).status == 200  # before the drain: not counted
        busy.send(get("/slow"))
        assert gated.entered.wait(WAIT)
        stopping = _drain_in_background(server, grace_period=30.0)
        assert other.request(get("/fast")).status == 200  # idle grace: served with close
        server.call(gated.release.set)
        assert busy.response().status == 200
        stopping.join(STOP_JOIN)
    assert server.result is not None
    assert (server.result.cut, server.result.served) == (0, 2)
