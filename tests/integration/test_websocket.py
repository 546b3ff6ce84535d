"""WebSockets on a native route, over real sockets: the websockets client and raw frames."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import zlib
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from nessen import Response, Runtime
from nessen.errors import HTTPError
from nessen.websocket import WebSocket, WebSocketDisconnect
from tests.conftest import ServeFactory, wait_for
from tests.rawhttp import RawClient
from tests.wsraw import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    RawWebSocket,
    close_payload,
    fragmented,
    frame,
)

DEADLINE = 20.0


def ws_runtime(events: list[Any] | None = None) -> Runtime:
    """Routes: /ws/{room} echoes (prefixing text with the room), /deny refuses, ..."""
    runtime = Runtime(access_log=False)
    seen = events if events is not None else []

    @runtime.route.websocket("/ws/{room}")
    async def chat(ws: WebSocket) -> None:
        chosen = "chat.v2" if "chat.v2" in ws.subprotocols else None
        await ws.accept(subprotocol=chosen, headers={"X-Room": ws.params["room"]})
        async for message in ws:
            if isinstance(message, str):
                await ws.send(f"{ws.params['room']}:{message}")
            else:
                await ws.send(message)
        seen.append(("closed", ws.close_code))

    @runtime.route.websocket("/info")
    async def info(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json(
            {
                "id": ws.id,
                "query": ws.query.get("q"),
                "ip": ws.client_ip,
                "path": ws.path,
                "offered": list(ws.subprotocols),  # read after the 101, which slims the offer
            }
        )
        await ws.close(4000, "done")

    @runtime.route.websocket("/deny")
    async def deny(ws: WebSocket) -> None:
        await ws.close()

    @runtime.route.websocket("/forbidden")
    async def forbidden(ws: WebSocket) -> None:
        raise HTTPError(401, "who are you?")

    @runtime.route.websocket("/broken")
    async def broken(ws: WebSocket) -> None:
        raise ValueError("bug before accept")

    @runtime.route.websocket("/crash")
    async def crash(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive()
        raise ValueError("bug after accept")

    @runtime.route.websocket("/silent")
    async def silent(ws: WebSocket) -> None:
        await ws.accept()
        seen.append("accepted")
        # It must not read (the receive-queue test), so it polls the state instead.
        while ws.is_open:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        seen.append(("silent closed", ws.close_code))

    @runtime.route.websocket("/flood")
    async def flood(ws: WebSocket) -> None:
        await ws.accept()
        chunk = b"x" * 65536
        try:
            for index in range(100_000):
                await ws.send(chunk)
                seen.append(index)
        except Exception as exc:
            seen.append(("flood ended", type(exc).__name__))

    @runtime.route.websocket("/json")
    async def json_echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            value = await ws.receive_json()
            await ws.send_json({"got": value})
            await ws.receive_text()
        except Exception as exc:
            seen.append(("json", type(exc).__name__, getattr(exc, "code", None)))

    @runtime.route.websocket("/stuck")
    async def stuck(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await asyncio.Event().wait()  # never reads, never sends: an app bug
        except asyncio.CancelledError:
            seen.append("stuck handler cancelled")
            raise

    @runtime.route.websocket("/two-readers")
    async def two_readers(ws: WebSocket) -> None:
        await ws.accept()
        first = asyncio.ensure_future(ws.receive())
        await asyncio.sleep(0)  # let the first reader wait
        try:
            await ws.receive()
        except RuntimeError as exc:
            seen.append(str(exc))
        await ws.send(f"first got {await first}")

    @runtime.route.websocket("/firehose")
    async def firehose(ws: WebSocket) -> None:
        await ws.accept()
        chunk = b"f" * 65536
        try:
            while True:  # no other await: only send() can let the loop run
                await ws.send(chunk)
        except Exception as exc:
            seen.append(("firehose ended", type(exc).__name__))

    @runtime.route.websocket("/send-first")
    async def send_first(ws: WebSocket) -> None:
        await ws.send("too early")

    @runtime.route.websocket("/receive-first")
    async def receive_first(ws: WebSocket) -> None:
        await ws.receive()

    @runtime.route.websocket("/disconnect-first")
    async def disconnect_first(ws: WebSocket) -> None:
        raise WebSocketDisconnect(1000)

    @runtime.route.websocket("/closing")
    async def closing(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4321, "done here")
        try:
            await ws.send("after the close")
        except WebSocketDisconnect as exc:
            seen.append(("send after close", exc.code, exc.reason))

    @runtime.route.get("/plain")
    async def plain(ctx: Any) -> Response:
        return Response.text("plain")

    return runtime


def ws_url(server: Any, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


# --- the handshake ------------------------------------------------------------------------


def test_echo_text_and_binary_with_params_subprotocol_and_extra_fields(
    serve: ServeFactory,
) -> None:
    server = serve(ws_runtime())
    with connect(ws_url(server, "/ws/lobby"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response is not None
        assert ws.response.headers["X-Room"] == "lobby"
        ws.send("hello")
        assert ws.recv(timeout=DEADLINE) == "lobby:hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=DEADLINE) == b"\x00\xff"


def test_request_fields_reach_the_handler_and_its_close_code_the_client(
    serve: ServeFactory,
) -> None:
    server = serve(ws_runtime())
    with connect(
        ws_url(server, "/info?q=42"), additional_headers={"X-Request-ID": "abc-123"}
    ) as ws:
        got = json.loads(ws.recv(timeout=DEADLINE))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    assert got == {
        "id": "abc-123",
        "query": "42",
        "ip": "127.0.0.1",
        "path": "/info",
        "offered": [],
    }
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "done")


def test_the_offered_subprotocols_stay_readable_after_the_101(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    with connect(ws_url(server, "/info"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        got = json.loads(ws.recv(timeout=DEADLINE))
        assert ws.subprotocol is None  # /info chooses none
    assert got["offered"] == ["chat.v1", "chat.v2"]


def test_a_plain_get_to_a_websocket_route_gets_426_with_upgrade(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    response = httpx.get(server.url + "/ws/lobby")
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert response.headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize(
    ("fields", "status", "check"),
    [
        ("Sec-WebSocket-Version: 8\r\n", 426, b"sec-websocket-version: 13"),
        ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n", 400, b""),
        ("Sec-WebSocket-Version: 13\r\n", 400, b""),  # no key
    ],
)
def test_a_bad_handshake_gets_a_clear_status(
    serve: ServeFactory, fields: str, status: int, check: bytes
) -> None:
    server = serve(ws_runtime())
    with RawClient(server.address) as client:
        client.send(
            (
                "GET /ws/a HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                + fields
                + "\r\n"
            ).encode()
        )
        response = client.response()
    assert response.status == status
    if check:
        name, _, value = check.decode().partition(": ")
        assert response.header(name) == value


def test_an_upgrade_to_a_path_without_a_websocket_route_is_refused(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    with pytest.raises(InvalidStatus) as unknown:
        connect(ws_url(server, "/nowhere"))
    assert unknown.value.response.status_code == 404


def test_an_origin_from_another_site_is_refused_and_listed_or_same_origin_ones_pass(
    serve: ServeFactory,
) -> None:
    server = serve(ws_runtime(), ws_allowed_origins=frozenset({"https://app.example.com"}))
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "/ws/a"), origin="https://evil.example")
    assert refused.value.response.status_code == 403
    with connect(ws_url(server, "/ws/a"), origin="https://app.example.com") as ws:
        ws.send("x")
        assert ws.recv(timeout=DEADLINE) == "a:x"
    same = f"http://{server.host}:{server.port}"
    with connect(ws_url(server, "/ws/b"), origin=same) as ws:
        ws.send("y")
        assert ws.recv(timeout=DEADLINE) == "b:y"


@pytest.mark.parametrize(
    ("path", "status"), [("/deny", 403), ("/forbidden", 401), ("/broken", 500)]
)
def test_a_handler_refuses_before_accepting_with_an_http_answer(
    serve: ServeFactory, path: str, status: int
) -> None:
    server = serve(ws_runtime())
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, path))
    assert refused.value.response.status_code == status
    assert b"bug before accept" not in (refused.value.response.body or b"")


def test_a_handler_failing_after_accept_closes_with_1011(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    with connect(ws_url(server, "/crash")) as ws:
        ws.send("go")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011


def test_json_helpers_and_a_wrong_message_type_closes_with_1003(serve: ServeFactory) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with connect(ws_url(server, "/json")) as ws:
        ws.send('{"a": 1}')
        assert json.loads(ws.recv(timeout=DEADLINE)) == {"got": {"a": 1}}
        ws.send(b"binary where text is expected")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1003
    wait_for(lambda: events, "the handler's end")
    assert events == [("json", "WebSocketDisconnect", 1003)]


# --- limits -------------------------------------------------------------------------------


def test_a_message_over_the_limit_closes_with_1009(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_max_message_bytes=1000, ws_max_frame_bytes=1000)
    with connect(ws_url(server, "/ws/a"), compression=None) as ws:
        ws.send("x" * 1000)
        assert ws.recv(timeout=DEADLINE) == "a:" + "x" * 1000
        ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_a_fragmented_message_over_the_limit_closes_with_1009(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_max_message_bytes=1000, ws_max_frame_bytes=600)
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/a") == 101
        ws.send(frame(TEXT, b"a" * 500, fin=False) + frame(CONT, b"b" * 500))
        assert ws.read_frame().payload == b"a:" + b"a" * 500 + b"b" * 500
        ws.send(frame(TEXT, b"a" * 600, fin=False) + frame(CONT, b"b" * 401))
        _, close = ws.read_until_close()
        assert close.close_code == 1009
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/a") == 101
        ws.send(frame(BINARY, b"a" * 601))  # one frame over WS_MAX_FRAME_SIZE
        _, close = ws.read_until_close()
        assert close.close_code == 1009


def test_a_compression_bomb_is_cut_at_the_message_limit(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_max_message_bytes=64 * 1024)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -12)
    bomb = squeeze.compress(b"\0" * (64 * 1024 * 1024)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692 §7.2.1: the final 00 00 ff ff is left out
    assert len(bomb) < 128 * 1024
    with RawWebSocket(server.address) as ws:
        status = ws.handshake("/ws/a", extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert status == 101
        assert b"permessage-deflate" in ws.head.lower()
        ws.send(frame(BINARY, bomb, rsv=0b100))
        _, close = ws.read_until_close()
        assert close.close_code == 1009


def test_compressed_messages_round_trip(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    with connect(ws_url(server, "/ws/z"), compression="deflate") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        text = "compress me " * 5000
        ws.send(text)
        assert ws.recv(timeout=DEADLINE) == "z:" + text


def test_compression_is_not_negotiated_when_turned_off(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_compression=False)
    with connect(ws_url(server, "/ws/z"), compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=DEADLINE) == "z:plain"


def test_a_client_that_does_not_read_makes_send_wait_then_is_cut(serve: ServeFactory) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events), ws_send_buffer_bytes=65536, send_timeout=0.5)
    with RawWebSocket(server.address) as ws:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert ws.handshake("/flood") == 101
        wait_for(lambda: any(isinstance(e, tuple) for e in events), "the flood to be cut")
    sent = [e for e in events if isinstance(e, int)]
    # 100,000 chunks of 64 KiB were asked for; what was queued is bounded by the socket
    # buffers and WS_SEND_BUFFER_SIZE, far below that.
    assert len(sent) < 2000
    assert events[-1] == ("flood ended", "WebSocketDisconnect")


def test_unread_messages_stop_the_server_reading(serve: ServeFactory) -> None:
    """At WS_RECEIVE_QUEUE unread messages the socket is not read: the client blocks."""
    events: list[Any] = []
    server = serve(ws_runtime(events), ws_receive_queue=4)
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/silent") == 101
        wait_for(lambda: "accepted" in events, "the handler")
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        ws.sock.settimeout(2.0)
        chunk = frame(BINARY, b"m" * 65536)
        sent = 0
        blocked = False
        while sent < 2000 and not blocked:  # 128 MiB: far past any buffer, read or not
            try:
                ws.sock.sendall(chunk)
            except TimeoutError:
                blocked = True
            sent += 1
    assert blocked
    assert sent < 200


# --- protocol edges, raw frames -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"unmasked", mask=False), 1002),
        (frame(TEXT, b"rsv", rsv=0b010), 1002),
        (frame(0x3, b"reserved opcode"), 1002),
        (frame(CONT, b"continuation first"), 1002),
        (frame(PING, b"fragmented ping", fin=False), 1002),
        (frame(PING, b"p" * 126), 1002),
        (frame(TEXT, b"\xff\xfe invalid"), 1007),
        (frame(TEXT, "caf\u00e9".encode()[:-1], fin=False) + frame(CONT, b"\xff"), 1007),
        (frame(CLOSE, close_payload(999)), 1002),
        (frame(CLOSE, close_payload(1005)), 1002),
        (frame(CLOSE, b"\x03"), 1002),  # a one-byte close payload
        (frame(CLOSE, close_payload(1000, "") + b"\xff"), 1007),  # invalid UTF-8 reason
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),  # new message mid-fragment
    ],
)
def test_a_protocol_violation_closes_with_its_code(
    serve: ServeFactory, data: bytes, code: int
) -> None:
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/r") == 101
        ws.send(data)
        _, close = ws.read_until_close()
        assert close.close_code == code
        assert ws.at_eof()


def test_pings_interleaved_with_fragments_are_answered_and_the_message_assembled(
    serve: ServeFactory,
) -> None:
    server = serve(ws_runtime())
    text = "h\u00e9llo w\u00f6rld"
    encoded = text.encode()
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/f") == 101
        ws.send(frame(TEXT, encoded[:2], fin=False))  # splits the é
        ws.send(frame(PING, b"p1"))
        ws.send(frame(CONT, encoded[2:8], fin=False))
        ws.send(frame(PONG, b"unsolicited"))
        ws.send(frame(PING, b"p2"))
        ws.send(frame(CONT, encoded[8:]))
        got = [ws.read_frame() for _ in range(3)]
        assert [(f.opcode, f.payload) for f in got] == [
            (PONG, b"p1"),
            (PONG, b"p2"),
            (TEXT, ("f:" + text).encode()),
        ]
        ws.send(frame(CLOSE, close_payload(1000, "bye")))
        _, close = ws.read_until_close()
        assert (close.close_code, close.payload[2:]) == (1000, b"bye")
        assert ws.at_eof()


def test_an_empty_close_is_echoed_and_the_handler_sees_1005(serve: ServeFactory) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/e") == 101
        ws.send(frame(CLOSE))
        _, close = ws.read_until_close()
        assert close.payload == b""
    wait_for(lambda: events, "the handler's end")
    assert events == [("closed", 1005)]


def test_the_server_pings_and_cuts_a_peer_that_never_answers(serve: ServeFactory) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events), ws_ping_interval=0.2, ws_ping_timeout=0.3)
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/silent") == 101
        assert ws.read_frame().opcode == PING  # never answered
        end = time.monotonic() + DEADLINE
        while not ws.at_eof():
            assert time.monotonic() < end
    wait_for(lambda: len(events) == 2, "the handler's end")
    assert events[1] == ("silent closed", 1006)


def test_a_peer_that_answers_pings_stays_connected(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_ping_interval=0.1, ws_ping_timeout=0.5)
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/p") == 101
        for _ in range(5):
            ping = ws.read_frame()
            assert ping.opcode == PING
            ws.send(frame(PONG, ping.payload))
        ws.send(frame(TEXT, b"still here"))
        while (got := ws.read_frame()).opcode == PING:
            ws.send(frame(PONG, got.payload))
        assert got.payload == b"p:still here"


def test_an_idle_websocket_is_closed_with_1001(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_idle_timeout=0.3, ws_ping_interval=0)
    with connect(ws_url(server, "/ws/i")) as ws:
        ws.send("one")
        assert ws.recv(timeout=DEADLINE) == "i:one"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle timeout")


def test_a_client_that_never_answers_the_close_is_cut(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), ws_idle_timeout=0.2, ws_ping_interval=0, ws_close_timeout=0.3)
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/c") == 101
        _, close = ws.read_until_close()  # 1001 idle; never answered
        assert close.close_code == 1001
        end = time.monotonic() + DEADLINE
        while not ws.at_eof():
            assert time.monotonic() < end


# --- the server around it -----------------------------------------------------------------


def test_websockets_count_against_max_connections(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), max_connections=1)
    with connect(ws_url(server, "/ws/m")) as ws:
        ws.send("x")
        assert ws.recv(timeout=DEADLINE) == "m:x"
        with RawClient(server.address) as client:
            client.send(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
            assert client.response().status == 503
    wait_for(lambda: httpx.get(server.url + "/plain").status_code == 200, "the slot back")


def test_the_drain_closes_open_websockets_with_1001(serve: ServeFactory) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with connect(ws_url(server, "/ws/d")) as ws:
        ws.send("x")
        assert ws.recv(timeout=DEADLINE) == "d:x"
        stopper = threading.Thread(target=server.stop, args=(10.0,))
        started = time.monotonic()
        stopper.start()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    stopper.join(DEADLINE)
    assert not stopper.is_alive()
    assert time.monotonic() - started < 10.0  # not the whole grace period
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert server.result is not None
    assert server.result.cut == 0
    assert server.result.websockets == 1
    assert events == [("closed", 1001)]


def test_metrics_and_api_health_count_websockets(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    with connect(ws_url(server, "/ws/n")) as ws:
        for index in range(3):
            ws.send(f"m{index}")
            assert ws.recv(timeout=DEADLINE) == f"n:m{index}"
        health = httpx.get(server.url + "/api/health").json()
        assert health["websockets"]["open"] == 1
        metrics = httpx.get(server.url + "/metrics").text
        assert "nessen_websockets_active 1.0" in metrics
    wait_for(
        lambda: httpx.get(server.url + "/api/health").json()["websockets"]["closed"] == 1,
        "the WebSocket's end",
    )
    health = httpx.get(server.url + "/api/health").json()["websockets"]
    assert health == {"open": 0, "closed": 1, "messages_in": 3, "messages_out": 3}
    closes = 'nessen_websocket_closes_total{closed_by="client",code="1000"} 1.0'
    # /metrics renders are reused for 250 ms: wait for one made after the close
    wait_for(lambda: closes in httpx.get(server.url + "/metrics").text, "the close counted")
    metrics = httpx.get(server.url + "/metrics").text
    assert 'nessen_websocket_messages_total{direction="in"} 3.0' in metrics
    assert 'nessen_websocket_bytes_total{direction="in"} 6.0' in metrics  # "m0" x 3
    assert 'nessen_websocket_bytes_total{direction="out"} 12.0' in metrics  # "n:m0" x 3


def test_middleware_runs_for_the_upgrade_and_can_refuse_it(serve: ServeFactory) -> None:
    runtime = ws_runtime()
    seen: list[Any] = []

    async def auth(ctx: Any, next: Any) -> Response:
        if ctx.path.startswith("/ws/") and ctx.headers.get("authorization") != "Bearer ok":
            return Response.json({"error": "unauthorized"}, 401)
        response = await next()
        seen.append((ctx.path, response.status))
        return response

    runtime.use(auth)
    server = serve(runtime)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "/ws/a"))
    assert refused.value.response.status_code == 401
    with connect(ws_url(server, "/ws/a"), additional_headers={"Authorization": "Bearer ok"}) as ws:
        ws.send("in")
        assert ws.recv(timeout=DEADLINE) == "a:in"
    assert seen == [("/ws/a", 101)]


def test_the_rate_limit_counts_handshakes(serve: ServeFactory) -> None:
    server = serve(ws_runtime(), rate_limit_max=2, rate_limit_window=60.0)
    for _ in range(2):
        with connect(ws_url(server, "/ws/r")) as ws:
            ws.send("x")
            assert ws.recv(timeout=DEADLINE) == "r:x"
    with pytest.raises(InvalidStatus) as limited:
        connect(ws_url(server, "/ws/r"))
    assert limited.value.response.status_code == 429


# --- the Autobahn TestSuite's categories, case by case where it matters ---------------------


@pytest.mark.parametrize("size", [0, 125, 126, 127, 128, 65535, 65536, 200_000])
def test_autobahn_1_framing_payload_lengths(serve: ServeFactory, size: int) -> None:
    """1.1/1.2: text and binary of every length encoding (7-bit, 16-bit, 64-bit)."""
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/l") == 101
        ws.send(frame(BINARY, b"\xab" * size))
        got = ws.read_frame()
        assert (got.opcode, got.fin, got.payload) == (BINARY, True, b"\xab" * size)
        ws.send(frame(TEXT, b"t" * size))
        got = ws.read_frame()
        assert (got.opcode, got.payload) == (TEXT, b"l:" + b"t" * size)


@pytest.mark.parametrize("payload", [b"", b"\x00\xff" * 62 + b"x", "h\u00e9".encode() * 41])
def test_autobahn_2_pings_are_answered_with_their_payload(
    serve: ServeFactory, payload: bytes
) -> None:
    """2.1-2.3: a ping's pong carries its payload (up to 125 bytes, binary or text)."""
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/p") == 101
        ws.send(frame(PING, payload))
        got = ws.read_frame()
        assert (got.opcode, got.payload) == (PONG, payload)


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_autobahn_4_reserved_opcodes_close_with_1002(serve: ServeFactory, opcode: int) -> None:
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/o") == 101
        ws.send(frame(opcode, b"x"))
        _, close = ws.read_until_close()
        assert close.close_code == 1002


def test_autobahn_5_many_fragments_are_one_message(serve: ServeFactory) -> None:
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/m") == 101
        parts = [bytes([i]) * 10 for i in range(50)]
        ws.send(fragmented(BINARY, parts))
        got = ws.read_frame()
        assert (got.opcode, got.payload) == (BINARY, b"".join(parts))


def test_autobahn_6_valid_utf8_split_byte_by_byte_is_accepted(serve: ServeFactory) -> None:
    """6.x: a valid text message cut inside multi-byte sequences (2, 3 and 4 bytes)."""
    text = "\u03ba\u1f79\u03c3\u03bc\u03b5 \u20ac \U0001f600"
    encoded = text.encode()
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/u") == 101
        ws.send(fragmented(TEXT, [encoded[index : index + 1] for index in range(len(encoded))]))
        got = ws.read_frame()
        assert got.payload.decode() == "u:" + text


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_autobahn_7_valid_close_codes_are_echoed(serve: ServeFactory, code: int) -> None:
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/c") == 101
        ws.send(frame(CLOSE, close_payload(code, "reason \u00e9")))
        _, close = ws.read_until_close()
        assert close.close_code == code
        assert ws.at_eof()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_autobahn_7_invalid_close_codes_close_with_1002(serve: ServeFactory, code: int) -> None:
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/c") == 101
        ws.send(frame(CLOSE, close_payload(code)))
        _, close = ws.read_until_close()
        assert close.close_code == 1002


def test_autobahn_7_nothing_is_read_after_the_close(serve: ServeFactory) -> None:
    """7.1.x: frames after a close frame are ignored; the TCP connection is closed."""
    server = serve(ws_runtime())
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/a") == 101
        ws.send(frame(CLOSE, close_payload(1000)) + frame(TEXT, b"after") + frame(PING, b"p"))
        others, close = ws.read_until_close()
        assert (others, close.close_code) == ([], 1000)
        assert ws.at_eof()


def test_autobahn_7_1_5_a_close_between_fragments_is_answered_normally(
    serve: ServeFactory,
) -> None:
    """RFC 6455 §5.4: a close may come between fragments; the message is dropped."""
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/ws/f") == 101
        ws.send(frame(TEXT, b"frag", fin=False) + frame(CLOSE, close_payload(1000)))
        ws.send(frame(CONT, b"ment"))  # after the close: ignored
        others, close = ws.read_until_close()
        assert (others, close.close_code) == ([], 1000)
    wait_for(lambda: events, "the handler's end")
    assert events == [("closed", 1000)]


def test_a_handler_still_running_after_its_connection_closed_is_cancelled(
    serve: ServeFactory,
) -> None:
    """It would otherwise hold its MAX_CONNECTIONS slot for as long as it waits."""
    events: list[Any] = []
    server = serve(ws_runtime(events), ws_close_timeout=0.3, max_connections=1)
    with connect(ws_url(server, "/stuck")) as ws:
        ws.send("anyone?")
    wait_for(lambda: events, "the handler to be cancelled")
    assert events == ["stuck handler cancelled"]
    wait_for(lambda: httpx.get(server.url + "/plain").status_code == 200, "the slot back")
    health = httpx.get(server.url + "/api/health").json()["websockets"]
    assert (health["open"], health["closed"]) == (0, 1)


def test_a_second_concurrent_reader_is_refused_and_the_first_keeps_its_message(
    serve: ServeFactory,
) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with connect(ws_url(server, "/two-readers")) as ws:
        wait_for(lambda: events, "the second reader's error")
        ws.send("m")
        assert ws.recv(timeout=DEADLINE) == "first got m"
    assert events == ["another task is already waiting in receive() on this WebSocket"]


def test_a_handler_sending_to_a_fast_reader_does_not_starve_the_server(
    serve: ServeFactory,
) -> None:
    """A client that reads as fast as the app sends never fills the send buffer: send()
    must still let the loop run (other requests, the close of the socket)."""
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with RawWebSocket(server.address) as ws:
        assert ws.handshake("/firehose") == 101
        reading = threading.Event()
        done = threading.Event()

        def read_fast() -> None:
            sink = bytearray(1 << 22)
            try:
                while not done.is_set() and ws.sock.recv_into(sink):  # no parsing: fast
                    reading.set()
            except OSError:
                pass

        reader = threading.Thread(target=read_fast, daemon=True)
        reader.start()
        assert reading.wait(DEADLINE)
        for _ in range(3):  # answered while the flood goes on
            assert httpx.get(server.url + "/plain", timeout=DEADLINE).text == "plain"
        done.set()
    wait_for(lambda: events, "the flood to end once the client is gone")
    assert events == [("firehose ended", "WebSocketDisconnect")]


@pytest.mark.parametrize("path", ["/send-first", "/receive-first", "/disconnect-first"])
def test_using_the_websocket_before_accept_is_a_prompt_500_not_a_hang(
    serve: ServeFactory, path: str
) -> None:
    server = serve(ws_runtime(), request_timeout=20.0)
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, path), open_timeout=DEADLINE)
    assert refused.value.response.status_code == 500  # not 503 at REQUEST_TIMEOUT
    assert time.monotonic() - started < 15.0


def test_send_after_close_names_the_close_code_and_reason(serve: ServeFactory) -> None:
    events: list[Any] = []
    server = serve(ws_runtime(events))
    with connect(ws_url(server, "/closing")) as ws, pytest.raises(ConnectionClosed):
        ws.recv(timeout=DEADLINE)
    wait_for(lambda: events, "the handler's send")
    assert events == [("send after close", 4321, "done here")]


def test_the_message_limit_alone_admits_a_large_single_frame_message(
    serve: ServeFactory,
) -> None:
    """WS_MAX_FRAME_SIZE follows WS_MAX_MESSAGE_SIZE unless set: clients send a message
    in one frame, so raising the message limit (--ws-max-size) must be enough."""
    server = serve(ws_runtime(), ws_max_message_bytes=3 * 1024 * 1024)
    with connect(ws_url(server, "/ws/big"), max_size=None) as ws:
        ws.send(b"b" * (2 * 1024 * 1024))
        assert ws.recv(timeout=DEADLINE) == b"b" * (2 * 1024 * 1024)


def test_a_sync_handler_is_refused_when_the_route_is_registered() -> None:
    runtime = Runtime()

    def blocking(ws: WebSocket) -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        runtime.route.websocket("/sync", blocking)
