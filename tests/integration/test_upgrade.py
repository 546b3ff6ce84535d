"""A 101 hands the connection to another protocol (RFC 9110 §7.8, §15.2.2).

The seam a WebSocket server builds on: the handler answers an Upgrade request with
``Response.switching_protocols(factory, protocol)``; the server writes the 101 and gives
the transport, and the bytes already read past the request (as memoryviews of the read
buffer, not copies), to the protocol the factory returns.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from nessen import Config, Request, Response, Runtime
from nessen.server.h1.connection import FEED_SLICE
from nessen.server.protocol import HttpProtocol
from nessen.server.state import ServerState
from tests.conftest import ServeFactory
from tests.integration.wire import closed_cleanly, json_body
from tests.rawhttp import RawClient, get
from tests.transport import RecordingTransport

UPGRADE = "Connection: Upgrade\r\nUpgrade: shout\r\n"


class Shout(asyncio.Protocol):
    """Answers every byte it gets upper-cased; records what it was given."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.seen.append("connection_made")

    def data_received(self, data: bytes | memoryview) -> None:
        self.seen.append(data)
        assert self.transport is not None
        self.transport.write(bytes(data).upper())

    def connection_lost(self, exc: Exception | None) -> None:
        self.seen.append("connection_lost")


def shout_runtime(seen: list[Any]) -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/shout")
    async def shout(ctx: Request) -> Response:
        if ctx.headers.get("upgrade") != "shout":
            return Response.text("ask to upgrade", 426, headers={"Upgrade": "shout"})
        return Response.switching_protocols(
            lambda: Shout(seen), "shout", headers={"X-Shout": "yes"}
        )

    @runtime.route.get("/wrongly")
    async def wrongly(ctx: Request) -> Response:
        return Response.switching_protocols(lambda: Shout(seen), "shout")

    return runtime


def _head(client: RawClient) -> bytes:
    while b"\r\n\r\n" not in client.buffer:
        assert client._fill(), "closed before the 101's end"
    head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
    return head


def _read(client: RawClient, size: int) -> bytes:
    while len(client.buffer) < size:
        assert client._fill(), "closed"
    data, client.buffer = client.buffer[:size], client.buffer[size:]
    return data


def test_a_101_hands_the_connection_and_the_bytes_after_the_request_over(
    serve: ServeFactory,
) -> None:
    seen: list[Any] = []
    server = serve(shout_runtime(seen))
    with RawClient(server.address) as client:
        client.send(get("/shout", extra=UPGRADE) + b"hello")  # the new protocol's first bytes
        head = _head(client)
        assert _read(client, 5) == b"HELLO"
        client.send(b"and more")
        assert _read(client, 8) == b"AND MORE"
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    fields = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    assert fields[b"connection"] == b"Upgrade"
    assert fields[b"upgrade"] == b"shout"
    assert fields[b"x-shout"] == b"yes"
    assert b"content-length" not in fields
    assert b"transfer-encoding" not in fields
    assert seen[0] == "connection_made"


def test_bytes_sent_before_the_101_reach_the_new_protocol(serve: ServeFactory) -> None:
    # A client may send the next protocol's first bytes without waiting for the 101:
    # they are held (reading paused) until the handler answers, then handed over.
    seen: list[Any] = []
    entered, release = threading.Event(), asyncio.Event()
    runtime = Runtime(access_log=False)

    @runtime.route.get("/later")
    async def later(ctx: Request) -> Response:
        entered.set()
        await release.wait()
        return Response.switching_protocols(lambda: Shout(seen), "shout")

    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/later", extra=UPGRADE))
        assert entered.wait(10.0)
        client.send(b"early")  # before the 101
        server.call(release.set)
        _head(client)
        assert _read(client, 5) == b"EARLY"


def test_a_101_for_a_request_that_did_not_ask_to_upgrade_is_a_500(serve: ServeFactory) -> None:
    seen: list[Any] = []
    server = serve(shout_runtime(seen), env="production")
    with RawClient(server.address) as client:
        response = client.request(get("/wrongly"))
        follow_up = client.request(get("/shout"))  # HTTP goes on on this connection
    assert response.status == 500
    assert json_body(response)["error"] == "Internal Server Error"
    assert follow_up.status == 426
    assert seen == []


def test_an_upgrade_request_answered_without_101_is_served_then_closed(
    serve: ServeFactory,
) -> None:
    seen: list[Any] = []
    runtime = shout_runtime(seen)

    @runtime.route.get("/plain")
    async def plain(ctx: Request) -> Response:
        return Response.text("plain")

    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/plain", extra=UPGRADE) + b"not http")
        response = client.response()
        assert closed_cleanly(client)
    assert (response.status, response.body, response.header("connection")) == (
        200,
        b"plain",
        "close",
    )
    assert seen == []


def test_stopping_the_server_closes_an_upgraded_connection(serve: ServeFactory) -> None:
    seen: list[Any] = []
    server = serve(shout_runtime(seen))
    with RawClient(server.address) as client:
        client.send(get("/shout", extra=UPGRADE))
        _head(client)
        client.send(b"x")
        assert _read(client, 1) == b"X"
        stopping = threading.Thread(target=server.stop, args=(0.5,), daemon=True)
        stopping.start()
        assert client.closed_by_peer(timeout=10.0)
        stopping.join(10.0)
    assert "connection_lost" in seen
    assert server.result is not None
    # closed, but not a failure of the drain: HTTP cannot finish another protocol's work
    assert (server.result.clean, server.result.upgraded) == (True, 1)


# --- from bytes, no socket: the hand-over copies nothing ----------------------------------


def test_the_bytes_after_the_request_reach_the_new_protocol_without_a_copy() -> None:
    seen: list[Any] = []

    async def handler(request: Request) -> Response:
        return Response.switching_protocols(lambda: Shout(seen), "shout")

    class Events:
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: ""

    async def main() -> None:
        state = ServerState(Config(), handler, Events())  # type: ignore[arg-type]
        protocol = HttpProtocol(state)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        request = get("/shout", extra=UPGRADE)
        small = request + b"abc"  # one read: the rest of it is the new protocol's
        protocol.data_received(small)
        assert not transport.reading  # held until the handler answers
        for _ in range(20):  # the handler's task runs on the loop
            if seen:
                break
            await asyncio.sleep(0)
        assert transport.protocol is not None
        assert transport.reading  # the new protocol reads on
        assert seen[0] == "connection_made"
        [tail] = seen[1:]
        assert isinstance(tail, memoryview)
        assert tail.obj is small
        assert bytes(tail) == b"abc"
        # A large read goes to the parser in slices: every slice after the request too.
        seen.clear()
        protocol2 = HttpProtocol(state)
        transport2 = RecordingTransport()
        protocol2.connection_made(transport2)
        large = request + b"z" * (3 * FEED_SLICE)
        protocol2.data_received(large)
        for _ in range(20):
            if seen:
                break
            await asyncio.sleep(0)
        pieces = seen[1:]
        assert all(isinstance(p, memoryview) and p.obj is large for p in pieces)
        assert b"".join(bytes(p) for p in pieces) == b"z" * (3 * FEED_SLICE)

    asyncio.run(main())


def test_an_upgrade_header_without_connection_upgrade_is_plain_http(serve: ServeFactory) -> None:
    # Upgrade is only a request to switch with "Connection: Upgrade" (RFC 9110 §7.8).
    seen: list[Any] = []
    server = serve(shout_runtime(seen))
    with RawClient(server.address) as client:
        response = client.request(get("/shout", extra="Upgrade: shout\r\n"))
        again = client.request(get("/shout", extra="Upgrade: shout\r\n"))
    assert (response.status, again.status) == (500, 500)
    assert seen == []  # both answered over HTTP, on one connection
