"""The access log and the metrics say what went on the wire (issue 13, section 4).

Each test serves a runtime on a real socket and compares its access line (``nessen.access``),
rejection line (``nessen.server``) and ``/metrics`` with what the client received: the
status really sent, the content bytes really handed to the kernel, and an ``outcome`` when
the response did not go out whole.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nessen import Config, Request, Response, Runtime
from nessen.asgi import ASGIHost
from nessen.testing import LiveServer
from tests.conftest import ServeFactory
from tests.integration.middleware.apps import Capture, capture_logs
from tests.integration.observability.helpers import labels, scrape, values
from tests.rawhttp import RawClient, get

DEADLINE = 15.0
PIECE = 65536
RCVBUF = 65536
"""The client's receive buffer where the test bounds what the kernel holds for it (setting
it turns autotuning off: without it, loopback grows a buffer to 32 MiB)."""


def wait_for(capture: Capture, count: int = 1, timeout: float = DEADLINE) -> list[Any]:
    """The JSON lines of ``capture`` once there are ``count`` (fails at the deadline)."""
    capture.wait_for(count, timeout)
    return capture.json_lines()


def read_until(client: RawClient, size: int) -> None:
    """Read into ``client.buffer`` until it holds ``size`` bytes."""
    while len(client.buffer) < size:
        assert client._fill(), "closed early"


# --- the status really sent -------------------------------------------------------------


def test_a_response_the_server_refuses_is_logged_and_counted_as_the_500_sent(
    serve: ServeFactory,
) -> None:
    runtime = Runtime()

    @runtime.route.get("/split")
    async def split(ctx: Request) -> Response:
        return Response.text("hi", headers={"X-Next": "a\r\nSet-Cookie: admin=1"})

    server = serve(runtime)
    with capture_logs() as access, RawClient(server.address) as client:
        response = client.request(get("/split"))
        (line,) = wait_for(access)
    assert response.status == 500
    assert b"admin=1" not in response.body
    assert (line["status"], line["level"]) == (500, "error")
    assert line["bytes"] == len(response.body)
    assert "outcome" not in line  # the 500 itself went out whole
    counted = values(scrape(server.url)["http_requests"], "http_requests_total")
    assert counted[labels(method="GET", route="/split", status="500")] == 1.0
    assert labels(method="GET", route="/split", status="200") not in counted


# --- the bytes really handed over -------------------------------------------------------


def test_a_stream_cut_by_send_timeout_logs_the_bytes_handed_over_and_its_outcome(
    serve: ServeFactory,
) -> None:
    runtime = Runtime()
    yielded = [0]

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yielded[0] += PIECE
            yield b"z" * PIECE

    @runtime.route.get("/endless")
    async def handler(ctx: Request) -> Response:
        return Response.streaming(endless())

    server = serve(runtime, send_timeout=0.5)
    with (
        capture_logs() as access,
        capture_logs("nessen.server") as refusals,
        RawClient(server.address) as client,
    ):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        client.send(get("/endless"))
        read_until(client, 300_000)  # then the client reads no more
        (line,) = wait_for(access)
        (refusal,) = wait_for(refusals)
    received = len(client.buffer)
    assert (line["status"], line["outcome"], line["level"]) == (200, "send_timeout", "info")
    # What left the server: at least what the client read (less the head and the chunk
    # framing), at most that plus what its kernel could hold for it. The abort resets the
    # connection, which drops the server kernel's send queue (megabytes): not counted.
    assert received - 4096 <= line["bytes"] <= received + 4 * RCVBUF
    assert line["bytes"] < yielded[0] - PIECE
    assert refusal["reason"] == "send_timeout"
    assert refusal["request_id"] == line["request_id"]
    assert (refusal["method"], refusal["path"]) == ("GET", "/endless")


def big_runtime(size: int) -> Runtime:
    runtime = Runtime()
    content = b"x" * size

    @runtime.route.get("/big")
    async def big(ctx: Request) -> Response:
        return Response(200, content, content_type="application/octet-stream")

    @runtime.route.get("/small")
    async def small(ctx: Request) -> Response:
        return Response.text("small")

    return runtime


BIG = 8_000_000
"""More than the kernel takes for a client that does not read (loopback's send buffer grows
to 4 MiB by default), so part of the response stays queued in the server."""


def test_a_large_response_is_logged_once_all_of_it_went_to_the_kernel(
    serve: ServeFactory,
) -> None:
    server = serve(big_runtime(BIG))
    with capture_logs() as access:
        slow = RawClient(server.address, timeout=30.0)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        slow.send(get("/big"))
        read_until(slow, 1000)  # the response has begun: the server wrote all it could
        with RawClient(server.address) as other:
            assert other.request(get("/small")).status == 200
        (line,) = wait_for(access)  # the later request's line came first:
        assert line["path"] == "/small"  # /big is not done while part of it is queued
        response = slow.response()  # now the client reads it all
        lines = wait_for(access, 2)
        slow.close()
    assert response.body == b"x" * BIG
    assert (lines[1]["path"], lines[1]["status"], lines[1]["bytes"]) == ("/big", 200, BIG)
    assert "outcome" not in lines[1]


def test_a_large_response_cut_by_send_timeout_logs_what_went_out(serve: ServeFactory) -> None:
    server = serve(big_runtime(BIG), send_timeout=0.5)
    with capture_logs() as access, capture_logs("nessen.server") as refusals:
        client = RawClient(server.address, timeout=30.0)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        client.send(get("/big"))
        read_until(client, 1000)
        (line,) = wait_for(access)
        (refusal,) = wait_for(refusals)
        client.close()
    assert (line["status"], line["outcome"]) == (200, "send_timeout")
    # What the client read, plus at most what its kernel held: not what the reset dropped.
    assert 0 < line["bytes"] <= len(client.buffer) + 4 * RCVBUF
    # The rejection line names the request, although its handler was long done.
    assert (refusal["reason"], refusal["request_id"]) == ("send_timeout", line["request_id"])
    assert refusal["path"] == "/big"


def test_a_head_request_is_logged_with_no_content_bytes(serve: ServeFactory) -> None:
    server = serve(big_runtime(100))
    with capture_logs() as access, RawClient(server.address) as client:
        response = client.request(b"HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n", head_request=True)
        (line,) = wait_for(access)
    assert response.header("content-length") == "100"
    assert (line["status"], line["bytes"]) == (200, 0)


# --- answers the server made in the handler's place ------------------------------------


def test_a_request_timeout_503_gets_an_access_line_and_is_counted_once(
    serve: ServeFactory,
) -> None:
    runtime = Runtime()

    @runtime.route.get("/slow/{n}")
    async def slow(ctx: Request) -> Response:
        await asyncio.sleep(30)
        return Response.text("late")

    server = serve(runtime, request_timeout=0.3)
    with capture_logs() as access, capture_logs("nessen.server") as refusals:
        with RawClient(server.address) as client:
            response = client.request(get("/slow/1", extra="X-Request-ID: trace-503\r\n"))
        (line,) = wait_for(access)
        (refusal,) = wait_for(refusals)
    assert response.status == 503
    assert line["request_id"] == "trace-503" == response.header("x-request-id")
    assert (line["status"], line["route"], line["outcome"]) == (503, "/slow/{n}", "request_timeout")
    assert line["bytes"] == len(response.body)
    assert (refusal["reason"], refusal["request_id"]) == ("request_timeout", "trace-503")
    families = scrape(server.url)
    counted = values(families["http_requests"], "http_requests_total")
    assert counted[labels(method="GET", route="/slow/{n}", status="503")] == 1.0
    rejected = values(families["nessen_rejected_requests"], "nessen_rejected_requests_total")
    assert rejected == {labels(reason="request_timeout"): 1.0}


def test_a_handler_cut_by_the_drain_gets_an_access_line_with_its_503() -> None:
    runtime = Runtime()
    entered = threading.Event()

    @runtime.route.get("/forever")
    async def forever(ctx: Request) -> Response:
        entered.set()
        await asyncio.sleep(60)
        return Response.text("late")

    server = LiveServer(runtime, rate_limit_max=1_000_000_000).start()
    with capture_logs() as access, RawClient(server.address) as client:
        client.send(get("/forever"))
        assert entered.wait(DEADLINE)
        server.stop(grace_period=0.2)
        (line,) = wait_for(access)
        response = client.response()
    assert response.status == 503
    assert (line["status"], line["bytes"], line["outcome"]) == (
        503,
        len(response.body),
        "shutdown_cut",
    )
    assert line["request_id"] == response.header("x-request-id")


# --- a client that goes away ------------------------------------------------------------


def test_a_client_gone_before_the_response_began_gets_a_line_with_no_status(
    serve: ServeFactory,
) -> None:
    runtime = Runtime()
    entered, release = threading.Event(), threading.Event()

    @runtime.route.get("/wait")
    async def wait(ctx: Request) -> Response:
        entered.set()
        await asyncio.to_thread(release.wait, DEADLINE)
        return Response.text("nobody is listening")

    server = serve(runtime)
    state = server.runtime.server.state  # type: ignore[union-attr]
    with capture_logs() as access:
        client = RawClient(server.address)
        client.send(get("/wait"))
        assert entered.wait(DEADLINE)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the server learns at once that the client is gone
        end = time.monotonic() + DEADLINE
        while state.connections:
            assert time.monotonic() < end
            time.sleep(0.005)
        release.set()
        (line,) = wait_for(access)
    assert (line["status"], line["bytes"], line["outcome"]) == (0, 0, "client_disconnected")
    assert line["level"] == "info"


def test_an_on_finished_hook_that_raises_is_logged_and_changes_nothing(
    serve: ServeFactory,
) -> None:
    runtime = Runtime()

    def broken(*args: Any) -> None:
        raise RuntimeError("hook bug")

    @runtime.use
    async def hooked(ctx: Request, next: Any) -> Response:
        ctx.on_finished = broken
        response: Response = await next()
        return response

    server = serve(runtime)
    with capture_logs("nessen.server", logging.ERROR) as errors, RawClient(server.address) as c:
        assert c.request(get("/health")).status == 200
        assert c.request(get("/nowhere")).status == 404  # the connection goes on
        lines = wait_for(errors, 2)
    assert lines[0]["message"].startswith("on_finished hook of GET /health failed")
    assert "RuntimeError: hook bug" in lines[0]["exception"]
    assert lines[0]["request_id"]


def slow_stream_runtime() -> tuple[Runtime, threading.Event]:
    runtime = Runtime()
    closed = threading.Event()

    async def pieces() -> AsyncIterator[bytes]:
        try:
            for _ in range(6000):  # at most a minute
                yield b"s" * 4096
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    @runtime.route.get("/stream")
    async def stream(ctx: Request) -> Response:
        return Response.streaming(pieces())

    return runtime, closed


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings and errors logged, less asyncio's debug-mode note that a callback was slow
    (``PYTHONASYNCIODEBUG=1`` in ``make test``; a loaded machine makes any callback slow)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and not (r.name == "asyncio" and r.msg.startswith("Executing "))
    ]


def test_a_client_leaving_mid_stream_is_an_info_line_without_traceback(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, closed = slow_stream_runtime()
    server = serve(runtime)
    with caplog.at_level(logging.WARNING), capture_logs() as access:
        client = RawClient(server.address)
        client.send(get("/stream"))
        read_until(client, 20_000)
        client.close()
        (line,) = wait_for(access)
        assert closed.wait(DEADLINE)  # the stream was closed, not left running
    assert (line["status"], line["outcome"], line["level"]) == (200, "client_disconnected", "info")
    assert line["bytes"] >= 20_000 - 1000
    assert _warnings(caplog) == []


def starlette_stream(closed: threading.Event) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def pieces() -> AsyncIterator[bytes]:
        try:
            for _ in range(6000):
                yield b"s" * 4096
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def stream(request: Any) -> StreamingResponse:
        return StreamingResponse(pieces(), media_type="text/plain")

    return Starlette(routes=[Route("/stream", stream)])


def fastapi_stream(closed: threading.Event) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    async def pieces() -> AsyncIterator[bytes]:
        try:
            for _ in range(6000):
                yield b"f" * 4096
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(pieces(), media_type="text/plain")

    return app


def _active_requests(server: LiveServer) -> int:
    found: list[int] = []
    server.call(lambda: found.append(server.runtime.server.state.active_requests))  # type: ignore[union-attr]
    return found[0]


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("make_app", [starlette_stream, fastapi_stream])
def test_an_asgi_app_s_client_leaving_mid_stream_is_an_info_line_without_traceback(
    make_app: Callable[[threading.Event], Any], caplog: pytest.LogCaptureFixture
) -> None:
    closed = threading.Event()
    server = LiveServer(ASGIHost(make_app(closed), Config())).start()
    try:
        with caplog.at_level(logging.WARNING), capture_logs() as access:
            client = RawClient(server.address)
            client.send(get("/stream"))
            read_until(client, 20_000)
            client.close()
            (line,) = wait_for(access)
            # The app returned (it was told http.disconnect): no request is left running.
            # (Whether its generator's finally has run by then is the framework's and the
            # garbage collector's business: Starlette cancels the task, and does not close
            # the iterator.)
            _wait_until(lambda: _active_requests(server) == 0, "the app returned")
    finally:
        server.stop()
    assert (line["status"], line["outcome"], line["level"]) == (200, "client_disconnected", "info")
    assert line["route"] == "/stream"
    assert line["bytes"] >= 20_000 - 1000
    assert _warnings(caplog) == []


def starlette_reading_body(entered: threading.Event) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def upload(request: Any) -> JSONResponse:
        entered.set()
        body = await request.body()  # raises ClientDisconnect when the client has left
        return JSONResponse({"received": len(body)})

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


def test_an_asgi_app_raising_because_its_client_left_mid_upload_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Starlette's ClientDisconnect from ``request.body()`` is the client's doing."""
    entered = threading.Event()
    server = LiveServer(ASGIHost(starlette_reading_body(entered), Config())).start()
    try:
        with caplog.at_level(logging.INFO), capture_logs() as access:
            client = RawClient(server.address)
            client.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
            client.send(b"x" * 1000)
            assert entered.wait(DEADLINE)
            client.close()  # mid-upload
            (line,) = wait_for(access)
    finally:
        server.stop()
    assert (line["outcome"], line["level"]) == ("client_disconnected", "info")
    assert _warnings(caplog) == []
    assert not [r for r in caplog.records if r.exc_info]
    (note,) = [r for r in caplog.records if "ClientDisconnect" in r.getMessage()]
    assert note.levelno == logging.INFO
    assert note.__dict__["path"] == "/upload"


def test_an_asgi_app_failing_before_its_response_has_the_500_in_its_access_line() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise ValueError("boom before start")

    server = LiveServer(ASGIHost(app, Config())).start()
    try:
        with capture_logs() as access, RawClient(server.address) as client:
            response = client.request(get("/fails"))
            (line,) = wait_for(access)
    finally:
        server.stop()
    assert response.status == 500
    assert (line["status"], line["bytes"], line["level"]) == (500, len(response.body), "error")
    assert line["request_id"] == response.header("x-request-id")


# --- rejection lines name their request ------------------------------------------------

REFUSED = [
    (
        "declared Content-Length over max_body_bytes",
        {"max_body_bytes": 10},
        b"POST /upload?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n",
        413,
        "body_too_large",
        ("POST", "/upload"),
    ),
    (
        "an Expect other than 100-continue",
        {},
        b"PUT /x HTTP/1.1\r\nHost: t\r\nExpect: tea\r\nContent-Length: 1\r\n\r\n",
        417,
        "expectation_failed",
        ("PUT", "/x"),
    ),
    (
        "a method outside allowed_methods",
        {"allowed_methods": frozenset({"GET", "HEAD"})},
        b"DELETE /items/1 HTTP/1.1\r\nHost: t\r\n\r\n",
        501,
        "method_not_implemented",
        ("DELETE", "/items/1"),
    ),
    (
        "a Host outside allowed_hosts",
        {"allowed_hosts": frozenset({"good.example"})},
        b"GET /admin HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        400,
        "host_not_allowed",
        ("GET", "/admin"),
    ),
    (
        "a Host that is not host[:port]",
        {},
        b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
        400,
        "bad_host",
        ("GET", "/a"),
    ),
    (
        "no Host on HTTP/1.1",
        {},
        b"GET /b HTTP/1.1\r\nAccept: */*\r\n\r\n",
        400,
        "missing_host",
        ("GET", "/b"),
    ),
    (
        "too many header fields",
        {"max_header_count": 3},
        b"GET /c HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        431,
        "too_many_headers",
        ("GET", "/c"),
    ),
    (
        "a method the server does not implement",
        {},
        b"BREW /pot?sugar=1 HTTP/1.1\r\nHost: t\r\n\r\n",
        501,
        "method_not_implemented",
        ("BREW", "/pot"),
    ),
    (
        "a path that climbs above /",
        {},
        b"GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
        "path_traversal",
        ("GET", "/../etc/passwd"),
    ),
    (
        "a header section not complete within headers_timeout",
        {"headers_timeout": 0.3},
        b"GET /slowloris HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n",
        408,
        "headers_timeout",
        ("GET", "/slowloris"),
    ),
]


@pytest.mark.parametrize(
    ("config", "sent", "status", "reason", "refused"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_rejection_line_carries_the_request_id_method_and_path(
    serve: ServeFactory,
    config: dict[str, Any],
    sent: bytes,
    status: int,
    reason: str,
    refused: tuple[str, str],
) -> None:
    server = serve(**config)
    with capture_logs("nessen.server") as refusals, RawClient(server.address) as client:
        assert client.request(sent).status == status
        (line,) = wait_for(refusals)
    assert line["reason"] == reason
    assert (line["method"], line["path"]) == refused
    assert len(line["request_id"]) > 8


def test_a_rejection_line_reuses_a_valid_incoming_request_id(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=10)
    with capture_logs("nessen.server") as refusals, RawClient(server.address) as client:
        sent = (
            b"POST /up HTTP/1.1\r\nHost: t\r\nX-Request-ID: lb-7f3a\r\nContent-Length: 99\r\n\r\n"
        )
        assert client.request(sent).status == 413
        (line,) = wait_for(refusals)
    assert line["request_id"] == "lb-7f3a"


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (
            b"POST /up HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\n"
            b"Content-Length: 99\r\n\r\n",
            413,
        ),  # refused before its Request was built
        (
            b"GET /a HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\n"
            b"Transfer-Encoding: gzip\r\n\r\n",
            501,
        ),
    ],
    ids=["declared-length", "transfer-coding"],
)
def test_a_rejection_line_names_the_client_a_trusted_proxy_forwarded(
    serve: ServeFactory, sent: bytes, status: int
) -> None:
    # The test client is on loopback, which TRUST_PROXY trusts by default.
    server = serve(max_body_bytes=10)
    with capture_logs("nessen.server") as refusals, RawClient(server.address) as client:
        assert client.request(sent).status == status
        (line,) = wait_for(refusals)
    assert line["client_ip"] == "198.51.100.7"
    untrusting = serve(max_body_bytes=10, trust_proxy=False)
    with capture_logs("nessen.server") as refusals, RawClient(untrusting.address) as client:
        assert client.request(sent).status == status
        (line,) = wait_for(refusals)
    assert line["client_ip"] == "127.0.0.1"
