"""Streamed responses: chunked on HTTP/1.1, close-delimited on HTTP/1.0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nessen import Response, Runtime
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import closed_cleanly
from tests.rawhttp import RawClient, get


def _streaming_runtime() -> Runtime:
    runtime = echo_runtime()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"one"
        await asyncio.sleep(0)
        yield b""  # empty pieces are skipped, never sent as a last chunk
        yield b"two"
        yield b"three"

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("stream failed")

    @runtime.route.get("/stream")
    async def stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(pieces(), content_type="text/plain")

    @runtime.route.get("/sync-stream")
    async def sync_stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming([b"a", b"bc"], content_type="text/plain")

    @runtime.route.get("/broken")
    async def broken_stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(broken(), content_type="text/plain")

    return runtime


def test_streamed_response_is_chunked_on_http11(serve: ServeFactory) -> None:
    server = serve(_streaming_runtime())
    with RawClient(server.address) as client:
        response = client.request(get("/stream"))
        follow_up = client.request(get("/"))
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("content-length") is None
    assert response.header("content-type") == "text/plain"
    assert response.header("connection") is None
    assert response.body == b"onetwothree"
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_chunked_stream_bytes_on_the_wire(serve: ServeFactory) -> None:
    server = serve(_streaming_runtime())
    with RawClient(server.address) as client:
        client.send(get("/stream", extra="Connection: close\r\n"))
        assert closed_cleanly(client)
    head, _, content = client.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert b"\r\nConnection: close" in head
    assert content == b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"


def test_plain_iterable_stream_is_chunked_too(serve: ServeFactory) -> None:
    server = serve(_streaming_runtime())
    with RawClient(server.address) as client:
        response = client.request(get("/sync-stream"))
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"abc"


@pytest.mark.parametrize("connection", ["", "Connection: keep-alive\r\n"])
def test_streamed_response_is_close_delimited_on_http10(
    serve: ServeFactory, connection: str
) -> None:
    server = serve(_streaming_runtime())
    with RawClient(server.address) as client:
        client.send(f"GET /stream HTTP/1.0\r\nHost: test\r\n{connection}\r\n".encode())
        response = client.response()  # no framing fields: reads to EOF
    assert response.status == 200
    assert response.header("transfer-encoding") is None
    assert response.header("content-length") is None
    assert response.header("connection") == "close"
    assert response.body == b"onetwothree"


def test_stream_that_fails_midway_aborts_the_connection(serve: ServeFactory) -> None:
    server = serve(_streaming_runtime())
    with RawClient(server.address) as client:
        client.send(get("/broken"))
        # Never a complete response: no last chunk, so the client sees the cut.
        with pytest.raises(ConnectionError):
            client.response()


def test_pipelined_request_after_a_stream_is_answered_after_it(serve: ServeFactory) -> None:
    server = serve(_streaming_runtime())
    with RawClient(server.address) as client:
        client.send(get("/stream") + get("/path?n=2") + get("/sync-stream"))
        first, second, third = (client.response() for _ in range(3))
    assert first.body == b"onetwothree"
    assert second.body == b'{"path":"/path","query":"n=2"}'
    assert third.body == b"abc"
