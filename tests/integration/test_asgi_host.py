"""ASGI apps on Nessen's server: the ASGI HTTP spec's edge cases over real sockets.

Each test serves a small raw ASGI app with ``ASGIHost`` on 127.0.0.1 (``LiveServer``: its
own thread and loop) and speaks exact bytes to it. The apps record what they receive;
the tests wait for those records with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nessen import Config, Runtime, State
from nessen.asgi import ASGIHost
from nessen.cli import load_app
from nessen.runtime import StartupError
from nessen.server.body import HIGH_WATER_BYTES
from nessen.testing import LiveServer
from tests.integration.wire import closed_cleanly, expect_rejection
from tests.rawhttp import RawClient, get

DEADLINE = 5.0


class Recorder:
    """What an app saw, shared with the test thread."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def add(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = DEADLINE) -> list[Any]:
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.items) >= count, timeout)
        assert ok, f"expected {count} records within {timeout} s, got {self.items!r}"
        return list(self.items)


def poll(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Wait until ``condition()`` holds (checked every millisecond), failing at the deadline."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        time.sleep(0.001)


@pytest.fixture
def host() -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(
        app: Any, *, health_endpoints: bool = False, root_path: str = "", **config: Any
    ) -> LiveServer:
        runtime = ASGIHost(
            app, Config(**config), health_endpoints=health_endpoints, root_path=root_path
        )
        server = LiveServer(runtime).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def start(
    send: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})


async def body(send: Any, data: bytes, more: bool = False) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def read_content(receive: Any) -> bytes:
    """The request's whole content, from its ``http.request`` events."""
    message = await receive()
    data: bytes = message["body"]
    while message["more_body"]:
        message = await receive()
        data += message["body"]
    return data


def http_only(app: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an app that knows only http: lifespan scopes raise (as many small apps do)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"unsupported scope {scope['type']}")
        await app(scope, receive, send)

    return wrapped


# --- request content ---------------------------------------------------------------------


def test_chunked_content_arrives_as_several_http_request_events(host: Any) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        events = []
        while True:
            message = await receive()
            seen.add(message)
            events.append([message["body"].decode(), message["more_body"]])
            if not message["more_body"]:
                break
        await start(send, headers=[(b"content-type", b"application/json")])
        await body(send, json.dumps(events).encode())

    server = host(app)
    with RawClient(server.address) as client:
        client.send(
            b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        seen.wait_for(1)
        client.send(b"5\r\nworld\r\n")
        seen.wait_for(2)
        client.send(b"0\r\n\r\n")
        response = client.response()
    assert response.status == 200
    assert json.loads(response.body) == [["hello", True], ["world", True], ["", False]]
    assert [m["type"] for m in seen.items] == ["http.request"] * 3


def test_unread_content_pauses_reading_and_stays_bounded(host: Any) -> None:
    release = threading.Event()
    total = 16 * 1024 * 1024

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, DEADLINE)
        size, events, more = len(first["body"]), 1, first["more_body"]
        while more:
            message = await receive()
            size += len(message["body"])
            events += 1
            more = message["more_body"]
        await start(send)
        await body(send, f"{size} {events}".encode())

    server = host(app, max_body_bytes=32 * 1024 * 1024)
    with RawClient(server.address, timeout=20.0) as client:
        head = f"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n".encode()
        sender = threading.Thread(target=client.send, args=(head + b"x" * total,), daemon=True)
        sender.start()
        state = server.runtime.server.state  # type: ignore[union-attr]
        poll(lambda: any(conn._reading_paused for conn in list(state.connections)))
        # The app reads nothing: the server holds at most the high-water mark plus one read.
        assert state.body_bytes <= HIGH_WATER_BYTES + 256 * 1024
        release.set()
        sender.join(DEADLINE)
        response = client.response()
    size, events = map(int, response.body.split())
    assert response.status == 200
    assert size == total
    assert events > 1  # delivered in parts, never buffered whole


def test_expect_100_continue_is_sent_when_the_app_reads(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        data = await read_content(receive)
        await start(send)
        await body(send, data.upper())

    server = host(app)
    with RawClient(server.address) as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = client.response()
        assert interim.status == 100
        client.send(b"hello")
        response = client.response()
    assert (response.status, response.body) == (200, b"HELLO")


def test_pipelined_requests_with_content_are_answered_in_order(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        data = await read_content(receive)
        await start(send)
        await body(send, scope["path"].encode() + b":" + data)

    server = host(app)
    with RawClient(server.address) as client:
        client.send(
            b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none"
            b"POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\ntwo\r\n0\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        bodies = [client.response().body for _ in range(3)]
    assert bodies == [b"/a:one", b"/b:two", b"/c:"]


@pytest.mark.parametrize(
    "sizes",
    [[10] * 15 + [20_000], [100] * 60, [4096] * 50],
    ids=["15-small-then-20k", "60x100", "50x4096"],
)
def test_a_pipelined_request_whose_content_was_left_unparsed_at_the_queue_depth_is_answered(
    host: Any, sizes: list[int]
) -> None:
    # The request that fills the queue has its content cut where parsing stopped; the
    # rest waits unparsed until the request runs, and must then reach the app.
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        data = await read_content(receive)
        await start(send)
        await body(send, data)

    server = host(app)
    payloads = [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]
    with RawClient(server.address) as client:
        client.send(
            b"".join(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                % (len(data), data)
                for data in payloads
            )
        )
        answers = [client.response().body for _ in payloads]
    assert answers == payloads


def test_content_over_max_body_bytes_mid_stream_gets_413_and_the_app_a_disconnect(
    host: Any,
) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.add(message["type"])
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        await start(send)
        await body(send, b"app answered")

    server = host(app, max_body_bytes=1000)
    with RawClient(server.address) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"258\r\n" + b"a" * 600 + b"\r\n")
        seen.wait_for(1)
        client.send(b"258\r\n" + b"b" * 600 + b"\r\n")
        expect_rejection(client, 413, "body_too_large")
    assert seen.wait_for(2) == ["http.request", "http.disconnect"]


def test_slow_content_gets_408_while_the_app_waits_for_it(host: Any) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.add(message["type"])
        message = await receive()
        seen.add(message["type"])

    server = host(app, body_timeout=0.3)
    with RawClient(server.address) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        expect_rejection(client, 408, "body_timeout")
    assert seen.wait_for(2) == ["http.request", "http.disconnect"]


def _read_all(seen: Recorder | None = None) -> Callable[..., Any]:
    """An app that reads the whole content and answers with its size."""

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                if seen is not None:
                    seen.add(message["type"])
                return
            size += len(message["body"])
            more = message["more_body"]
        await start(send)
        await body(send, str(size).encode())

    return app


def test_a_steady_upload_longer_than_body_timeout_reaches_the_app(host: Any) -> None:
    server = host(_read_all(), body_timeout=1.5)
    with RawClient(server.address, timeout=30.0) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        started = time.monotonic()
        for _ in range(90):  # 90 000 bytes over ~4.5 s: never 1.5 s without content
            client.send(b"3e8\r\n" + b"u" * 1000 + b"\r\n")
            time.sleep(0.05)  # the upload's pace
        client.send(b"0\r\n\r\n")
        response = client.response()
    assert time.monotonic() - started > 3.0
    assert (response.status, response.body) == (200, b"90000")


def test_content_trickled_below_body_min_rate_gets_408_and_the_app_a_disconnect(
    host: Any,
) -> None:
    seen = Recorder()
    server = host(_read_all(seen), body_timeout=1.0, body_min_rate=1000)
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        client.sock.settimeout(0.05)
        for _ in range(1000):  # a byte every 50 ms until the server answers
            client.send(b"t")
            try:
                client.sock.recv(1, socket.MSG_PEEK)
                break
            except TimeoutError:
                continue
        client.sock.settimeout(5.0)
        expect_rejection(client, 408, "body_too_slow")
    assert seen.wait_for(1) == ["http.disconnect"]


def test_time_the_app_leaves_content_unread_does_not_count_against_the_rate(
    host: Any,
) -> None:
    # 400 000 bytes/s are asked for after 0.5 s. The client sends 300 000 bytes at once;
    # the app leaves them unread for 1.5 s (the server is the slow one: reading pauses),
    # then reads on while the client sends 300 000 more over ~0.25 s. Counted from the
    # start, that would be ~170 000 bytes/s and cut; the paused time does not count.
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        await asyncio.sleep(1.5)  # an app slow to read on (the scenario, not a wait)
        seen.add("reading again")
        size, more = len(first["body"]), first["more_body"]
        while more:
            message = await receive()
            size += len(message["body"])
            more = message["more_body"]
        await start(send)
        await body(send, str(size).encode())

    server = host(app, body_timeout=0.5, body_min_rate=400_000)
    with RawClient(server.address, timeout=30.0) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 600000\r\n\r\n")
        client.send(b"h" * 300_000)
        seen.wait_for(1)
        for _ in range(5):
            client.send(b"i" * 60_000)
            time.sleep(0.05)  # the upload's pace
        response = client.response()
    assert (response.status, response.body) == (200, b"600000")


# --- responses ---------------------------------------------------------------------------


def test_streamed_response_without_content_length_goes_out_chunked(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await start(send, headers=[(b"content-type", b"text/plain")])
        await body(send, b"ab", more=True)
        await body(send, b"", more=True)
        await body(send, b"cde", more=True)
        await body(send, b"")

    server = host(app)
    with RawClient(server.address) as client:
        client.send(get("/"))
        raw = b""
        while not raw.endswith(b"0\r\n\r\n"):
            chunk = client.sock.recv(65536)
            assert chunk, f"closed early after {raw!r}"
            raw += chunk
        head, _, framed = raw.partition(b"\r\n\r\n")
        assert b"\r\nTransfer-Encoding: chunked" in head
        assert b"Content-Length" not in head
        assert framed == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        again = client.request(get("/"))  # the connection stays usable
    assert (again.status, again.body) == (200, b"abcde")


def test_streamed_response_with_content_length_keeps_it(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await start(send, headers=[(b"content-length", b"5")])
        await body(send, b"ab", more=True)
        await body(send, b"cde", more=True)
        await body(send, b"")

    server = host(app)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
        again = client.request(get("/"))
    assert response.header("content-length") == "5"
    assert response.header("transfer-encoding") is None
    assert response.body == b"abcde"
    assert again.body == b"abcde"


def test_http_disconnect_reaches_the_app_when_the_client_closes_mid_stream(host: Any) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await start(send)
        await body(send, b"first", more=True)
        seen.add(await receive())  # waits until the client has gone
        await body(send, b"late", more=True)  # spec 2.3: a no-op once disconnected
        seen.add("send after disconnect returned")

    server = host(app)
    client = RawClient(server.address)
    client.send(get("/"))
    while b"first" not in client.buffer:
        assert client._fill()
    client.close()
    assert seen.wait_for(2) == [{"type": "http.disconnect"}, "send after disconnect returned"]


def test_http_disconnect_after_the_response_is_complete(host: Any) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await start(send)
        await body(send, b"done")
        seen.add(await receive())

    server = host(app)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
        assert response.body == b"done"
        assert seen.wait_for(1) == [{"type": "http.disconnect"}]
        assert client.request(get("/")).body == b"done"  # and the connection lives on


# --- statuses without content -------------------------------------------------------------


@pytest.mark.parametrize(("status", "length"), [(204, None), (205, "0"), (304, None)])
def test_an_apps_content_on_a_no_content_status_is_not_sent(
    host: Any, status: int, length: str | None
) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"4")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"oops"})

    server = host(app)
    with RawClient(server.address) as client:
        client.send(get("/") + get("/"))
        first, second = client.response(), client.response()
        assert client.buffer == b""
    for response in (first, second):
        assert response.status == status
        assert response.header("content-length") == length


# --- errors ------------------------------------------------------------------------------


def test_app_raising_before_start_gets_500_and_is_logged(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom before start")

    server = host(app)
    with caplog.at_level(logging.ERROR), RawClient(server.address) as client:
        response = client.request(get("/"))
        assert response.status == 500
        assert json.loads(response.body)["error"] == "Internal Server Error"
        # the id in the body is echoed in the header, as on every other response
        assert response.header("x-request-id") == json.loads(response.body)["request_id"]
        assert client.request(get("/")).status == 500  # keep-alive survives
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records), (
        caplog.text
    )


def test_app_returning_without_a_response_gets_500_and_is_logged(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    server = host(app)
    with caplog.at_level(logging.ERROR), RawClient(server.address) as client:
        response = client.request(get("/"))
    assert response.status == 500
    assert response.header("x-request-id") == json.loads(response.body)["request_id"]
    assert "returned without sending 'http.response.start'" in caplog.text


def test_app_raising_after_start_closes_the_connection_and_is_logged(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await start(send)
        await body(send, b"partial", more=True)
        raise ValueError("boom after start")

    server = host(app)
    with caplog.at_level(logging.ERROR), RawClient(server.address) as client:
        client.send(get("/"))
        assert client.closed_by_peer()
    assert client.buffer.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in client.buffer
    assert not client.buffer.endswith(b"0\r\n\r\n")  # no last chunk: visibly truncated
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records), (
        caplog.text
    )


def test_app_past_request_timeout_gets_503_and_is_cancelled(host: Any) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.add("cancelled")
            raise

    server = host(app, request_timeout=0.3)
    with RawClient(server.address) as client:
        client.send(get("/", extra="X-Request-ID: trace-asgi-1\r\n"))
        expect_rejection(client, 503, "request_timeout", retry_after="1", request_id="trace-asgi-1")
    assert seen.wait_for(1) == ["cancelled"]


# --- scope and lifespan ------------------------------------------------------------------


def test_scope_follows_the_asgi_http_spec(host: Any) -> None:
    seen = Recorder()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            scope["state"]["pool"] = "opened"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.add({**scope, "state": dict(scope["state"])})
        scope["state"]["pool"] = "changed by a request"  # a copy: others do not see it
        await receive()
        await start(send)
        await body(send, b"ok")

    server = host(app)
    with RawClient(server.address) as client:
        client.request(
            b"GET /a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: example.test:8080\r\n"
            b"X-Custom: Some Value\r\n\r\n"
        )
        client.request(get("/"))
        port = client.sock.getsockname()[1]
    scope, second = seen.wait_for(2)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/a b/\u00e9"
    assert scope["raw_path"] == b"/a%20b/%C3%A9"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"example.test:8080"), (b"x-custom", b"Some Value")]
    assert tuple(scope["client"]) == ("127.0.0.1", port)
    assert tuple(scope["server"]) == server.address
    assert second["state"] == {"pool": "opened"}


def test_the_host_serves_through_the_runtime_it_holds() -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, b"app")

    host = ASGIHost(app, Config(host="127.0.0.1", port=0), health_endpoints=True)
    ran: list[str] = []

    @host.on_startup
    async def opened() -> None:
        ran.append("startup")

    @host.on_shutdown
    async def closed() -> None:
        ran.append("shutdown")

    assert isinstance(host.runtime, Runtime)
    assert not isinstance(host, Runtime)
    assert host.runtime.stream_bodies
    assert host.app is host.runtime.app
    assert host.has_config
    assert host.lifecycle is host.runtime.lifecycle

    async def main() -> None:
        server = await host.start()
        assert host.server is server
        assert host.admin_server is None
        assert host.state == State.READY
        assert host.handler.server_address == server.address
        assert await asyncio.to_thread(lambda: _fetch(server.address, "/x")) == b"app"
        assert await asyncio.to_thread(lambda: _fetch(server.address, "/health")) == b"OK"
        result = await host.stop(grace_period=1.0)
        assert result.clean

    asyncio.run(main())
    assert ran == ["startup", "shutdown"]
    assert host.state == State.STOPPING


def _fetch(address: tuple[str, int], path: str) -> bytes:
    with RawClient(address) as client:
        return client.request(get(path)).body


def test_serve_stops_on_request_stop() -> None:
    host = ASGIHost(http_only(lambda scope, receive, send: None), Config(host="127.0.0.1", port=0))
    host.on_startup(_async_call(host.request_stop))
    assert asyncio.run(host.serve(handle_signals=False)) == 0
    assert host.state == State.STOPPING


def _async_call(func: Callable[[], None]) -> Callable[[], Any]:
    async def hook() -> None:
        func()

    return hook


def test_nessen_serve_takes_an_asgi_host_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("hosted_app")
    module.host = ASGIHost(http_only(lambda scope, receive, send: None))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hosted_app", module)
    assert load_app("hosted_app:host") is module.host  # type: ignore[attr-defined]
    hosted = load_app("hosted_app:host.asgi_app", health_endpoints=True)
    assert isinstance(hosted, ASGIHost)
    assert hosted.asgi_app is module.host.asgi_app  # type: ignore[attr-defined]


def test_lifespan_startup_failure_fails_the_start() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})

    async def main() -> None:
        runtime = ASGIHost(app, Config(host="127.0.0.1", port=0))
        with pytest.raises(StartupError, match="database unreachable"):
            await runtime.start()
        assert runtime.server is None  # never bound

    asyncio.run(main())


def test_app_without_lifespan_support_is_served(
    host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, b"fine")

    with caplog.at_level(logging.INFO, logger="nessen.asgi"):
        server = host(app)
    with RawClient(server.address) as client:
        assert client.request(get("/")).body == b"fine"
    assert "'lifespan' protocol appears unsupported" in caplog.text


def test_health_endpoints_answer_in_front_of_the_app_when_enabled(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, b"app:" + scope["path"].encode())

    with_probes = host(app, health_endpoints=True)
    without = host(app)
    with RawClient(with_probes.address) as client:
        assert client.request(get("/health")).body == b"OK"
        assert json.loads(client.request(get("/ready")).body)["ready"] is True
        assert b"http_requests_total" in client.request(get("/metrics")).body
        assert client.request(get("/other")).body == b"app:/other"
    with RawClient(without.address) as client:
        assert client.request(get("/health")).body == b"app:/health"


def test_a_client_closing_at_once_leaves_no_connection(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, b"x")

    server = host(app)
    sock = socket.create_connection(server.address)
    sock.close()
    state = server.runtime.server.state  # type: ignore[union-attr]
    poll(lambda: not state.connections)
    with RawClient(server.address) as client:
        assert client.request(get("/")).status == 200
        client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
        response = client.response()  # answered before reading the rest: then closed
        assert response.header("connection") == "close"
        assert closed_cleanly(client)


def test_the_asgi_doc_sample_serves_what_it_says() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "ASGI.md"
    sample = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)[0]
    namespace: dict[str, Any] = {}
    exec(compile(sample, "docs/ASGI.md", "exec"), namespace)
    with LiveServer(namespace["host"]) as server, RawClient(server.address) as client:
        response = client.request(get("/anything"))
        assert (response.status, response.body) == (200, b"hello from ASGI")
        assert client.request(get("/health")).body == b"OK"
        big = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 65537\r\n\r\n"
        client.send(big)
        expect_rejection(client, 413, "body_too_large")


def test_head_keeps_the_content_length_the_app_announces(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send, headers=[(b"content-length", b"1234"), (b"content-type", b"text/x")])
        await body(send, b"")

    server = host(app)
    with RawClient(server.address) as client:
        response = client.request(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", head_request=True)
        assert response.header("content-length") == "1234"
        assert response.header("transfer-encoding") is None
        # nothing followed the head: the next response starts right away
        assert (
            client.request(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", head_request=True).status == 200
        )


def test_a_body_past_max_response_bytes_is_sent_not_refused(host: Any) -> None:
    big = b"z" * 300_000

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, big)

    server = host(app, max_response_bytes=100_000)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
    assert response.status == 200
    assert response.header("content-length") == str(len(big))
    assert response.body == big


def test_a_header_value_with_a_line_break_gets_500(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send, headers=[(b"x-bad", b"a\r\nSet-Cookie: evil=1")])
        await body(send, b"never sent")

    server = host(app)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
    assert response.status == 500
    assert response.header("set-cookie") is None
    assert b"never sent" not in response.body


def test_http_1_0_streamed_response_ends_with_the_connection(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, b"one ", more=True)
        await body(send, b"two")

    server = host(app)
    with RawClient(server.address) as client:
        response = client.request(b"GET / HTTP/1.0\r\n\r\n")
        assert response.header("transfer-encoding") is None
        assert response.body == b"one two"  # read to EOF: close-delimited


def test_request_id_is_echoed_and_set_while_the_app_runs(host: Any) -> None:
    from nessen.observability.logs import current_request_id

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send)
        await body(send, str(current_request_id.get()).encode())

    server = host(app)
    with RawClient(server.address) as client:
        given = client.request(get("/", extra="X-Request-ID: abc-123\r\n"))
        generated = client.request(get("/"))
        repeated = client.request(get("/", extra="X-Request-ID: one\r\nX-Request-ID: two\r\n"))
    assert given.header("x-request-id") == "abc-123"
    assert given.body == b"abc-123"
    # A repeated field joins to "one, two", which is not a valid id: a new one, as natively.
    assert repeated.header("x-request-id") not in {"one", "two", "one, two"}
    assert repeated.header("x-request-id") == repeated.body.decode()
    assert generated.header("x-request-id") == generated.body.decode()


def test_a_header_list_sent_again_gets_each_responses_own_request_id(host: Any) -> None:
    # Converted header lists are cached: what the cache keeps must not carry one
    # response's request id into the next, nor consume a one-shot iterable.
    shared = [(b"content-type", b"text/plain"), (b"x-n", b"1")]

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/shared":  # the same list object every time, as apps keep constants
            headers: Any = shared
        elif path == "/pairs-as-lists":  # unhashable pairs: converted each time
            headers = [[b"content-type", b"text/plain"], [b"x-n", b"1"]]
        elif path == "/generator":
            headers = (pair for pair in shared)
        else:
            headers = [(b"x-request-id", b"upstream-7"), *shared]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await body(send, b"ok")

    server = host(app)
    paths = ["/shared", "/pairs-as-lists", "/generator", "/own"] * 2
    with RawClient(server.address) as client:
        answers = [client.request(get(path)) for path in paths]
    for answer in answers:
        assert (answer.status, answer.body) == (200, b"ok")
        assert answer.header("content-type") == "text/plain"
        assert answer.header("x-n") == "1"
    ids = [[v for k, v in answer.headers if k.lower() == "x-request-id"] for answer in answers]
    assert ids[3] == ids[7] == ["upstream-7"]
    ours = [found[0] for found in ids[:3] + ids[4:7]]
    assert all(len(found) == 1 for found in ids)
    assert len(set(ours)) == 6  # each response its own request's id


def test_an_apps_own_request_id_server_and_date_are_sent_instead_of_ours(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        fields = [
            (b"x-request-id", b"upstream-7"),  # e.g. propagated from the service it called
            (b"server", b"shop/2.1"),
            (b"date", b"Tue, 01 Dec 2026 10:00:00 GMT"),
        ]
        await start(send, headers=fields)
        await body(send, b"ok")

    server = host(app)
    with RawClient(server.address) as client:
        answer = client.request(get("/"))

    def values(name: str) -> list[str]:
        return [value for key, value in answer.headers if key.lower() == name]

    assert values("x-request-id") == ["upstream-7"]  # one field: the app's
    assert values("server") == ["shop/2.1"]
    assert values("date") == ["Tue, 01 Dec 2026 10:00:00 GMT"]


def test_an_apps_connection_close_closes_the_connection_after_its_response(host: Any) -> None:
    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await start(send, headers=[(b"connection", b"close")])
        await body(send, b"bye")

    server = host(app)
    with RawClient(server.address) as client:
        client.send(get("/") + get("/"))  # a second request pipelined behind: not served
        answer = client.response()
        assert answer.header("connection") == "close"
        assert answer.body == b"bye"
        assert client.closed_by_peer()  # closed after it (RFC 9112 §9.6)
        assert client.buffer == b""  # the pipelined request was not answered


def test_root_path_is_in_the_scope_and_in_front_of_the_path(host: Any) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.add((scope["root_path"], scope["path"], scope["raw_path"]))
        await start(send)
        await body(send, b"ok")

    server = host(app, root_path="/api")
    with RawClient(server.address) as client:
        client.request(get("/items/1"))
    assert seen.wait_for(1) == [("/api", "/api/items/1", b"/items/1")]


def test_the_status_page_is_served_for_an_asgi_app_with_the_probes_outside_production(
    host: Any,
) -> None:
    seen = Recorder()

    @http_only
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.add(scope["path"])
        await start(send, 404)
        await body(send, b"the app's")

    developing = host(app, health_endpoints=True, env="development")
    producing = host(app, health_endpoints=True)  # production: no status page
    without = host(app, env="development")  # no probes asked for: the app has every path
    with RawClient(developing.address) as client:
        page = client.request(get("/_nessen/status"))
        script = client.request(get("/_nessen/status.js"))
    assert page.status == 200
    assert b"<html" in page.body.lower()
    assert script.status == 200
    with RawClient(producing.address) as client:
        assert client.request(get("/_nessen/status")).status == 404
    with RawClient(without.address) as client:
        assert client.request(get("/_nessen/status")).body == b"the app's"
    assert seen.wait_for(1) == ["/_nessen/status"]  # only the host without probes passed it on
