"""The ASGI ``websocket`` scope both ways, over real sockets.

- Hosted: raw ASGI apps and a FastAPI app served by ``ASGIHost`` (what ``nessen serve``
  runs), driven by the websockets client.
- Served: a ``Runtime`` with websocket routes served by uvicorn as an ASGI app.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from fastapi import WebSocketDisconnect as FastAPIDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from nessen import Config, Runtime
from nessen.asgi import ASGIHost
from nessen.server.body import ClientDisconnected
from nessen.testing import LiveServer
from nessen.websocket import WebSocket
from tests.conftest import wait_for

DEADLINE = 20.0


@pytest.fixture
def host() -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(app: Any, **config: Any) -> LiveServer:
        server = LiveServer(ASGIHost(app, Config(**config))).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def url(server: LiveServer, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def raw_app(events: list[Any]) -> Any:
    """A raw ASGI app: /echo accepts (with a subprotocol and a field) and echoes;
    /close closes before accept; /deny sends a denial response; /late sends after the
    client left."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert scope["type"] == "websocket"
        events.append(("scope", scope["path"], scope["scheme"], scope["subprotocols"]))
        assert (await receive())["type"] == "websocket.connect"
        path = scope["path"]
        if path == "/close":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == "/deny":
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"no token")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b"no token\n"})
            return
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": scope["subprotocols"][-1] if scope["subprotocols"] else None,
                "headers": [(b"x-hosted", b"yes")],
            }
        )
        if path == "/late":
            message = await receive()
            events.append(message)
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except ClientDisconnected as exc:
                events.append(("send raised", isinstance(exc, Exception)))
            return
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                events.append(("disconnect", message["code"]))
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})

    return app


def test_a_hosted_app_accepts_with_a_subprotocol_and_echoes(
    host: Callable[..., LiveServer],
) -> None:
    events: list[Any] = []
    server = host(raw_app(events))
    with connect(url(server, "/echo?x=1"), subprotocols=["a", "b"]) as ws:
        assert ws.subprotocol == "b"
        assert ws.response is not None
        assert ws.response.headers["x-hosted"] == "yes"
        assert ws.response.headers["x-request-id"]
        ws.send("shout")
        assert ws.recv(timeout=DEADLINE) == "SHOUT"
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=DEADLINE) == b"\x02\x01"
        ws.close(4001, "bye")
    wait_for(lambda: ("disconnect", 4001) in events, "the app to see the close")
    assert events[0] == ("scope", "/echo", "ws", ["a", "b"])


def test_a_hosted_app_closing_before_accept_gets_403(host: Callable[..., LiveServer]) -> None:
    server = host(raw_app([]))
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server, "/close"))
    assert refused.value.response.status_code == 403


def test_a_hosted_apps_denial_response_is_sent(host: Callable[..., LiveServer]) -> None:
    server = host(raw_app([]))
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server, "/deny"))
    response = refused.value.response
    assert (response.status_code, response.headers["x-why"], response.body) == (
        401,
        "no token",
        b"no token\n",
    )


def test_sending_after_the_client_left_raises_an_error_the_app_can_catch(
    host: Callable[..., LiveServer],
) -> None:
    events: list[Any] = []
    server = host(raw_app(events))
    with connect(url(server, "/late")) as ws:
        ws.close(1000)
    wait_for(lambda: ("send raised", True) in events, "the late send")
    assert {"type": "websocket.disconnect", "code": 1000, "reason": ""} in events


def test_hosted_limits_apply(host: Callable[..., LiveServer]) -> None:
    server = host(raw_app([]), ws_max_message_bytes=100)
    with connect(url(server, "/echo"), compression=None) as ws:
        ws.send("x" * 101)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def fastapi_app(events: list[Any]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/rooms/{room}")
    async def room(websocket: FastAPIWebSocket, room: str) -> None:
        if room == "private":
            await websocket.close(code=1008)
            return
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"room": room, "echo": data})
        except FastAPIDisconnect as exc:
            events.append(("left", exc.code))

    @app.websocket("/late")
    async def late(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()  # the client's message, then it closes
        try:
            while True:  # sending into a closed WebSocket: Starlette's own disconnect
                await websocket.send_text("anyone?")
                await asyncio.sleep(0.01)
        except FastAPIDisconnect as exc:
            events.append(("late send", exc.code))

    @app.get("/")
    def index() -> dict[str, bool]:
        return {"ok": True}

    return app


def test_a_fastapi_websocket_endpoint_runs_unchanged(host: Callable[..., LiveServer]) -> None:
    events: list[Any] = []
    server = host(fastapi_app(events))
    with connect(url(server, "/rooms/blue")) as ws:
        ws.send('{"n": 1}')
        assert ws.recv(timeout=DEADLINE) == '{"room":"blue","echo":{"n":1}}'
    wait_for(lambda: events, "the endpoint to see the client leave")
    assert events == [("left", 1000)]
    with pytest.raises(InvalidStatus) as refused:
        connect(url(server, "/rooms/private"))
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as unknown:
        connect(url(server, "/nowhere"))
    assert unknown.value.response.status_code == 403  # Starlette's answer: no such route


# --- a Runtime served by another ASGI server ----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def under_uvicorn() -> Iterator[Callable[[Runtime], int]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(runtime: Runtime) -> int:
        port = free_port()
        config = uvicorn.Config(runtime, port=port, log_level="warning", ws="websockets-sansio")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, "uvicorn to start")
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(DEADLINE)


def test_a_runtimes_websocket_routes_work_under_uvicorn(
    under_uvicorn: Callable[[Runtime], int],
) -> None:
    runtime = Runtime(access_log=False)
    seen: list[Any] = []

    @runtime.route.websocket("/ws/{room}")
    async def chat(ws: WebSocket) -> None:
        if ws.params["room"] == "closed":
            await ws.close()
            return
        await ws.accept(subprotocol="v2" if "v2" in ws.subprotocols else None)
        async for message in ws:
            await ws.send(f"{ws.params['room']}:{message}")
        seen.append(ws.close_code)

    async def tag(ctx: Any, next: Any) -> Any:
        ctx.state["tagged"] = True
        return await next()

    @runtime.route.websocket("/too-early")
    async def too_early(ws: WebSocket) -> None:
        await ws.send("before accept")  # a RuntimeError: the handshake gets 500 at once

    runtime.use(tag)
    port = under_uvicorn(runtime)
    with connect(f"ws://127.0.0.1:{port}/ws/red", subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v2"
        ws.send("hi")
        assert ws.recv(timeout=DEADLINE) == "red:hi"
    wait_for(lambda: seen, "the handler's end")
    assert seen == [1000]
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/ws/closed")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as unknown:
        connect(f"ws://127.0.0.1:{port}/unknown")
    assert unknown.value.response.status_code == 404  # the router's own 404, as denial
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as early:
        connect(f"ws://127.0.0.1:{port}/too-early", open_timeout=DEADLINE)
    assert early.value.response.status_code == 500  # not REQUEST_TIMEOUT's 503, 30 s later
    assert time.monotonic() - started < 15.0


def test_a_fastapi_endpoint_sending_after_the_client_left_gets_its_disconnect(
    host: Callable[..., LiveServer],
) -> None:
    events: list[Any] = []
    server = host(fastapi_app(events))
    with connect(url(server, "/late")) as ws:
        ws.send("bye")
    wait_for(lambda: events, "the endpoint to see the client gone")
    assert events == [("late send", 1006)]
