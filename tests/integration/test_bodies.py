"""Request content (Content-Length, chunked), Expect: 100-continue, HEAD, 204, 205 and 304."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from nessen import Response, Runtime
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import closed_cleanly, expect_rejection, no_data_within
from tests.rawhttp import RawClient, get

CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"


def _post_head(length: int, extra: bytes = b"") -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n%b\r\n" % (length, extra)


# --- Content-Length ------------------------------------------------------------------------


def test_content_length_body_is_echoed(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(_post_head(11) + b"hello world")
    assert response.status == 200
    assert response.body == b"hello world"
    assert response.header("content-length") == "11"
    assert response.header("content-type") == "application/octet-stream"


def test_every_byte_value_survives_the_round_trip(serve: ServeFactory) -> None:
    body = bytes(range(256)) * 4
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(_post_head(len(body)) + body)
    assert response.body == body


def test_zero_length_body(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(_post_head(0))
        follow_up = client.request(get("/"))
    assert (response.status, response.body) == (200, b"")
    assert response.header("content-length") == "0"
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_body_split_across_many_small_writes(serve: ServeFactory) -> None:
    body = bytes(i % 251 for i in range(600))
    server = serve()
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(_post_head(len(body)))
        sizes = [1, 2, 3, 5, 8, 13]
        position, step = 0, 0
        while position < len(body):
            size = sizes[step % len(sizes)]
            client.send(body[position : position + size])
            position += size
            step += 1
        response = client.response()
    assert response.status == 200
    assert response.body == body


def test_whole_request_sent_one_byte_at_a_time(serve: ServeFactory) -> None:
    request = _post_head(5) + b"abcde"
    server = serve()
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(request)):
            client.send(request[index : index + 1])
        response = client.response()
    assert (response.status, response.body) == (200, b"abcde")


# --- chunked -------------------------------------------------------------------------------


def test_chunked_body_with_extensions_and_trailer_is_echoed(serve: ServeFactory) -> None:
    server = serve()
    content = (
        b"5;name=value\r\nhello\r\n"
        b"1\r\n \r\n"
        b'A;quoted="a b"\r\nchunked!!!\r\n'
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    with RawClient(server.address) as client:
        response = client.request(CHUNKED_HEAD + content)
        follow_up = client.request(get("/"))
    assert response.status == 200
    assert response.body == b"hello chunked!!!"
    assert response.header("content-length") == "16"
    assert response.header("x-checksum") is None  # trailer fields are not echoed
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_chunked_body_with_only_the_last_chunk_is_empty(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(CHUNKED_HEAD + b"0\r\n\r\n")
    assert (response.status, response.body) == (200, b"")
    assert response.header("content-length") == "0"


def test_chunked_body_split_across_writes(serve: ServeFactory) -> None:
    content = b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"
    server = serve()
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(CHUNKED_HEAD)
        for index in range(0, len(content), 3):
            client.send(content[index : index + 3])
        response = client.response()
    assert response.body == b"Wikipedia in\r\n\r\nchunks."


def test_upper_case_hex_chunk_size(serve: ServeFactory) -> None:
    data = b"x" * 0x1F
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(CHUNKED_HEAD + b"1F\r\n" + data + b"\r\n0\r\n\r\n")
    assert response.body == data


def test_bad_chunk_size_is_refused(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(CHUNKED_HEAD + b"zz\r\nhello\r\n0\r\n\r\n")
        expect_rejection(client, 400, "malformed_request")


# --- Expect: 100-continue ------------------------------------------------------------------


def test_100_continue_arrives_before_the_body_is_sent(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(_post_head(5, b"Expect: 100-continue\r\n"))
        interim = client.response()
        assert (interim.version, interim.status, interim.reason) == ("HTTP/1.1", 100, "Continue")
        assert interim.headers == []
        assert client.buffer == b""
        client.send(b"hello")
        final = client.response()
    assert (final.status, final.body) == (200, b"hello")


def test_100_continue_with_a_chunked_body(serve: ServeFactory) -> None:
    server = serve()
    head = CHUNKED_HEAD[:-2] + b"Expect: 100-Continue\r\n\r\n"
    with RawClient(server.address) as client:
        client.send(head)
        assert client.response().status == 100
        client.send(b"3\r\nabc\r\n0\r\n\r\n")
        final = client.response()
    assert (final.status, final.body) == (200, b"abc")


def test_declared_body_over_limit_gets_413_and_no_100_continue(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        client.send(_post_head(11, b"Expect: 100-continue\r\n"))
        expect_rejection(client, 413, "body_too_large")


def test_unknown_expectation_gets_417(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(_post_head(5, b"Expect: something-else\r\n"))
        response = client.response()
        assert response.status == 417
        assert response.header("connection") == "close"
        assert closed_cleanly(client)


def test_100_continue_for_a_pipelined_request_waits_for_the_earlier_response(
    serve: ServeFactory,
) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(get("/") + _post_head(3, b"Expect: 100-continue\r\n"))
        first = client.response()
        interim = client.response()
        assert (first.status, first.body, interim.status) == (200, b"hello", 100)
        client.send(b"abc")
        final = client.response()
    assert (final.status, final.body) == (200, b"abc")


def _deferring_runtime() -> Runtime:
    """Routes that read their content, and a middleware that refuses before the handler."""
    runtime = Runtime(access_log=False)

    async def gate(ctx, next):  # type: ignore[no-untyped-def]
        if ctx.headers.get("x-deny"):
            return Response.json({"error": "denied"}, 401)
        if ctx.headers.get("x-sign"):  # a middleware that needs the content first
            content = await ctx.read()
            response = await next()
            response.headers["X-Signed-Length"] = str(len(content))
            return response
        if ctx.headers.get("x-peek"):  # reads .body before the content was read
            return Response.text(str(len(ctx.body)))
        return await next()

    runtime.use(gate)

    @runtime.route.post("/echo")
    async def echo(ctx):  # type: ignore[no-untyped-def]
        return Response(200, ctx.body, content_type="application/octet-stream")

    return runtime


def held_by(server: Any) -> int:
    """Content bytes the server holds in its budget, read on its loop: after the callback
    that wrote the last response (and released what that request held) has returned."""
    held: list[int] = []
    server.call(lambda: held.append(server.runtime.server.state.body_bytes))
    assert held, "the server's loop did not run the check"
    return held[0]


EXPECT = b"Expect: 100-continue\r\n"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n" + EXPECT, 404),
        (b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n" + EXPECT, 405),
        (_post_head(5, EXPECT + b"X-Deny: 1\r\n")[:-2], 401),
    ],
)
def test_a_request_answered_before_its_handler_gets_no_100_continue(
    serve: ServeFactory, head: bytes, status: int
) -> None:
    server = serve(_deferring_runtime())
    with RawClient(server.address) as client:
        client.send(head + b"\r\n")  # and never the content: the client waits for a 100
        response = client.response()
        assert response.status == status  # the final status first, no interim 100
        # The content was not read: the connection is not reused (RFC 9110 §10.1.1).
        assert response.header("connection") == "close"
        assert closed_cleanly(client)
    assert held_by(server) == 0


def test_a_handler_that_reads_gets_its_content_after_the_100(serve: ServeFactory) -> None:
    server = serve(_deferring_runtime())
    body = bytes(range(256)) * 1024  # 256 KiB: past the channel's high-water mark
    with RawClient(server.address, timeout=20.0) as client:
        client.send(_post_head(len(body), EXPECT))
        assert client.response().status == 100
        client.send(body)
        final = client.response()
        assert (final.status, final.body) == (200, body)
        follow_up = client.request(_post_head(3) + b"abc")  # the connection is reused
    assert (follow_up.status, follow_up.body) == (200, b"abc")
    assert held_by(server) == 0  # what it held is given back to the budget


def test_a_middleware_that_awaits_read_gets_the_content_and_the_handler_too(
    serve: ServeFactory,
) -> None:
    server = serve(_deferring_runtime())
    with RawClient(server.address) as client:
        client.send(_post_head(5, EXPECT + b"X-Sign: 1\r\n"))
        assert client.response().status == 100
        client.send(b"hello")
        final = client.response()
    assert (final.status, final.body) == (200, b"hello")
    assert final.header("x-signed-length") == "5"


def test_a_middleware_that_reads_body_before_read_gets_a_clear_error_not_empty_content(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(_deferring_runtime())
    with caplog.at_level(logging.ERROR), RawClient(server.address) as client:
        client.send(_post_head(5, EXPECT + b"X-Peek: 1\r\n"))
        response = client.response()
    assert response.status == 500
    assert any(
        "await request.read()" in record.getMessage() + str(record.exc_info)
        for record in caplog.records
    )


# --- HEAD ----------------------------------------------------------------------------------


def test_head_sends_the_get_headers_without_content(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        get_response = client.request(get("/"))
        head = client.request(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n", head_request=True)
        assert client.buffer == b""
        assert no_data_within(client, 0.1)  # no stray content bytes after the head
        follow_up = client.request(get("/path"))
    assert head.status == 200
    assert head.header("content-length") == str(len(get_response.body)) == "5"
    assert head.header("content-type") == get_response.header("content-type")
    assert head.body == b""
    assert (follow_up.status, follow_up.body) == (200, b'{"path":"/path","query":""}')


def test_head_of_a_streamed_response_sends_no_chunks(serve: ServeFactory) -> None:
    runtime = echo_runtime()

    async def pieces():  # type: ignore[no-untyped-def]
        yield b"abc"
        yield b"def"

    @runtime.route.get("/stream")
    async def stream(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(pieces(), content_type="text/plain")

    server = serve(runtime)
    with RawClient(server.address) as client:
        head = client.request(b"HEAD /stream HTTP/1.1\r\nHost: test\r\n\r\n", head_request=True)
        assert no_data_within(client, 0.1)
        follow_up = client.request(get("/"))
    assert head.status == 200
    assert head.header("content-length") is None
    assert head.body == b""
    assert (follow_up.status, follow_up.body) == (200, b"hello")


# --- 204 and 304 ---------------------------------------------------------------------------


def _no_content_runtime() -> Runtime:
    runtime = echo_runtime()

    @runtime.route.get("/204")
    async def no_content(ctx):  # type: ignore[no-untyped-def]
        return Response(204, b"must not be sent", headers={"X-Kind": "no-content"})

    @runtime.route.get("/304")
    async def not_modified(ctx):  # type: ignore[no-untyped-def]
        return Response(304, b"must not be sent", headers={"ETag": '"v1"'})

    @runtime.route.get("/205")
    async def reset_content(ctx):  # type: ignore[no-untyped-def]
        return Response(205, b"must not be sent either")

    @runtime.route.get("/205-stream")
    async def reset_content_streamed(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(iter([b"not sent"]), status=205)

    return runtime


def test_204_and_304_have_no_content_length_and_no_content(serve: ServeFactory) -> None:
    server = serve(_no_content_runtime())
    with RawClient(server.address) as client:
        no_content = client.request(get("/204"))
        not_modified = client.request(get("/304"))
        assert client.buffer == b""
        follow_up = client.request(get("/"))
    assert no_content.status == 204
    assert no_content.header("x-kind") == "no-content"
    assert not_modified.status == 304
    assert not_modified.header("etag") == '"v1"'
    for response in (no_content, not_modified):
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        assert response.header("connection") is None
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_204_head_and_body_bytes_on_the_wire(serve: ServeFactory) -> None:
    server = serve(_no_content_runtime())
    with RawClient(server.address) as client:
        client.send(get("/204", extra="Connection: close\r\n"))
        assert closed_cleanly(client)
    head, separator, rest = client.buffer.partition(b"\r\n\r\n")
    assert separator == b"\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"content-length" not in head.lower()
    assert rest == b""


def test_205_says_content_length_0_and_sends_no_content(serve: ServeFactory) -> None:
    # RFC 9110 §15.3.6: a 205 carries no content; Content-Length: 0 keeps the connection.
    # Pipelined behind it, the next response must parse from the right byte.
    server = serve(_no_content_runtime())
    with RawClient(server.address) as client:
        client.send(get("/205") + get("/205-stream") + get("/"))
        reset = client.response()
        reset_streamed = client.response()
        follow_up = client.response()
        assert client.buffer == b""
    for response in (reset, reset_streamed):
        assert response.status == 205
        assert response.header("content-length") == "0"
        assert response.header("transfer-encoding") is None
        assert response.header("connection") is None
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_content_given_to_a_no_content_status_is_dropped_with_one_warning(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(_no_content_runtime())
    with caplog.at_level(logging.WARNING, logger="nessen.server"), RawClient(server.address) as c:
        paths = ("/205", "/205", "/204", "/204", "/205-stream", "/205-stream")
        statuses = [c.request(get(path)).status for path in paths]
    assert statuses == [205, 205, 204, 204, 205, 205]
    dropped = [r.getMessage() for r in caplog.records if "carries none" in r.getMessage()]
    assert len(dropped) == 3, dropped  # one per route and status, not one per response
    assert "23 bytes of content to a 205 response" in dropped[0]
    assert "16 bytes of content to a 204 response" in dropped[1]
    assert "a stream (not read) to a 205 response" in dropped[2]


def test_under_another_asgi_server_a_no_content_status_carries_no_content() -> None:
    # The Runtime as an ASGI app (what uvicorn, hypercorn and granian call): the same rule
    # as on Nessen's own server, told to the host server through the ASGI messages.
    import asyncio

    runtime = _no_content_runtime()
    sent: dict[str, list[dict[str, object]]] = {}

    async def call(path: str) -> None:
        messages: list[dict[str, object]] = []
        sent[path] = messages

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
        }
        await runtime(scope, receive, send)

    async def main() -> None:
        for path in ("/204", "/205", "/304"):
            await call(path)

    asyncio.run(main())
    for path, length in (("/204", None), ("/205", b"0"), ("/304", None)):
        start, body = sent[path]
        assert start["status"] == int(path[1:])
        fields = dict(start["headers"])  # type: ignore[call-overload]
        assert fields.get(b"content-length") == length, (path, fields)
        assert body["body"] == b""
