"""WebSocket echo at ``/ws`` for ``benchmarks/ws_echo.py``: a native route and a raw ASGI app.

- ``runtime``: ``Runtime()`` as ``nessen serve`` ships it, with one websocket route that
  accepts and sends every message back (``async for message in ws: await ws.send(message)``).
- ``app``: a raw ASGI 3 app (no framework) doing the same on the ``websocket`` scope, served
  by Nessen, uvicorn and granian alike; it also answers ``GET /health`` (``OK``) so the
  runner can tell the server is up.
"""

from __future__ import annotations

from typing import Any

from nessen import Runtime
from nessen.websocket import WebSocket

runtime = Runtime()


@runtime.route.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for message in ws:
        await ws.send(message)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo each WebSocket message at /ws; ``OK`` on GET /health; 404 otherwise."""
    kind = scope["type"]
    if kind == "websocket":
        if scope["path"] != "/ws":
            await send({"type": "websocket.close", "code": 1008})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif kind == "http":
        ok = scope["path"] == "/health"
        body = b"OK" if ok else b"Not Found"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 404,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
