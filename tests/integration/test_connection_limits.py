"""Per-connection and per-worker limits: requests per connection, concurrency, connections."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from nessen import Response, Runtime
from nessen.server.protocol import PROBE_RESERVE
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import PHRASES, closed_cleanly, expect_rejection, json_body
from tests.rawhttp import RawClient, get


def test_max_requests_per_connection_closes_after_the_last(serve: ServeFactory) -> None:
    server = serve(max_requests_per_connection=2)
    with RawClient(server.address) as client:
        first = client.request(get("/"))
        assert first.header("connection") is None
        assert first.header("keep-alive") == "timeout=65"
        second = client.request(get("/"))
        assert (second.status, second.body) == (200, b"hello")
        assert second.header("connection") == "close"
        assert second.header("keep-alive") is None
        assert closed_cleanly(client)
        assert client.buffer == b""


def test_max_requests_per_connection_with_pipelined_extras(serve: ServeFactory) -> None:
    server = serve(max_requests_per_connection=2)
    with RawClient(server.address) as client:
        client.send(get("/path?n=1") + get("/path?n=2") + get("/path?n=3"))
        first, second = client.response(), client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""  # the third is left for the client to retry
    assert [json.loads(r.body)["query"] for r in (first, second)] == ["n=1", "n=2"]
    assert second.header("connection") == "close"


def test_max_requests_per_connection_of_one(serve: ServeFactory) -> None:
    server = serve(max_requests_per_connection=1)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
        assert response.header("connection") == "close"
        assert closed_cleanly(client)


def _blocking_runtime(entered: threading.Event, release: asyncio.Event) -> Runtime:
    runtime = echo_runtime()

    @runtime.route.get("/block")
    async def block(ctx):  # type: ignore[no-untyped-def]
        entered.set()
        await release.wait()
        return Response.text("released")

    return runtime


def test_max_concurrent_requests_answers_503_with_retry_after(serve: ServeFactory) -> None:
    entered, release = threading.Event(), asyncio.Event()
    server = serve(_blocking_runtime(entered, release), max_concurrent_requests=1)
    with RawClient(server.address) as busy, RawClient(server.address) as other:
        busy.send(get("/block"))
        assert entered.wait(5.0)
        refused = other.request(get("/"))
        assert refused.status == 503
        assert refused.header("retry-after") == "1"
        assert json_body(refused) == {"error": PHRASES[503], "reason": "overloaded"}
        server.call(release.set)
        released = busy.response()
        assert (released.status, released.body) == (200, b"released")
        # The 503 was about load, not framing: the connection may be reused.
        assert refused.header("connection") is None
        again = other.request(get("/"))
        assert (again.status, again.body) == (200, b"hello")


def _wait_for_connection_count(server: object, count: int) -> None:
    """Poll the server's connection registry (it is updated on the server's thread)."""
    deadline = time.monotonic() + 5.0
    runtime_server = server.runtime.server  # type: ignore[attr-defined]
    while runtime_server.connection_count != count:
        assert time.monotonic() < deadline, runtime_server.connection_count
        time.sleep(0.01)


def test_max_connections_refuses_the_extra_connection_with_503(serve: ServeFactory) -> None:
    server = serve(max_connections=2)
    with RawClient(server.address) as first, RawClient(server.address) as second:
        assert first.request(get("/")).status == 200
        assert second.request(get("/")).status == 200
        with RawClient(server.address) as third:
            third.send(get("/"))
            expect_rejection(third, 503, "max_connections", retry_after="1")
        assert first.request(get("/")).status == 200  # the admitted ones are unaffected
        first.close()
        _wait_for_connection_count(server, 1)
        with RawClient(server.address) as fourth:
            assert fourth.request(get("/")).status == 200
        assert second.request(get("/")).status == 200


def test_past_the_probe_reserve_connections_get_503_before_sending_a_request(
    serve: ServeFactory,
) -> None:
    server = serve(max_connections=1)
    with RawClient(server.address) as first:
        assert first.request(get("/")).status == 200
        reserve = [RawClient(server.address) for _ in range(PROBE_RESERVE)]
        try:
            with RawClient(server.address) as beyond:
                expect_rejection(beyond, 503, "max_connections", retry_after="1")
        finally:
            for client in reserve:
                client.close()


def test_probes_are_answered_when_the_connection_limit_is_reached(serve: ServeFactory) -> None:
    server = serve(max_connections=1)
    with RawClient(server.address) as first:
        assert first.request(get("/")).status == 200
        with RawClient(server.address) as probe:
            assert probe.request(get("/health")).status == 200
        with RawClient(server.address) as other:
            other.send(get("/"))
            expect_rejection(other, 503, "max_connections", retry_after="1")


def test_a_silent_connection_in_the_probe_reserve_is_closed_quickly(serve: ServeFactory) -> None:
    server = serve(max_connections=1)
    with RawClient(server.address) as first:
        assert first.request(get("/")).status == 200
        with RawClient(server.address) as silent:
            started = time.monotonic()
            assert silent.closed_by_peer(timeout=5.0)
            assert silent.buffer == b""
            assert time.monotonic() - started < 3.0  # 1 s, not the 10 s headers_timeout


def test_probes_are_answered_when_handlers_are_at_capacity(serve: ServeFactory) -> None:
    runtime = echo_runtime()
    release = threading.Event()

    @runtime.route.get("/busy")
    async def busy(ctx):  # type: ignore[no-untyped-def]
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return Response.text("done")

    server = serve(runtime, max_concurrent_requests=1)
    with RawClient(server.address) as holder, RawClient(server.address) as probe:
        holder.send(get("/busy"))
        deadline = time.monotonic() + 5
        while server.runtime.active_requests < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert probe.request(get("/health")).status == 200
        assert probe.request(get("/ready")).status == 200
        overloaded = probe.request(get("/"))
        assert overloaded.status == 503
        release.set()
        assert holder.response().status == 200
