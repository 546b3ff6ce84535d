"""A runtime with a websocket route that reports its loaded libraries (see ``modules``)."""

from __future__ import annotations

from nessen import Runtime
from nessen.websocket import WebSocket
from tests.e2e.apps.modules import report

with_websocket = report(Runtime())


@with_websocket.route.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for message in ws:
        await ws.send(message)
