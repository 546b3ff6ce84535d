"""Apps with WebSocket endpoints for the end-to-end tests: a native runtime and FastAPI."""

from __future__ import annotations

import os

from fastapi import FastAPI, WebSocketDisconnect
from fastapi import WebSocket as FastAPIWebSocket

from nessen import Request, Response, Runtime
from nessen.websocket import WebSocket

runtime = Runtime()


@runtime.route.get("/pid")
async def pid(ctx: Request) -> Response:
    return Response.text(str(os.getpid()))


@runtime.route.websocket("/ack")
async def ack(ws: WebSocket) -> None:
    """Acknowledge each message with ``PID:MESSAGE``: which worker took it."""
    await ws.accept()
    async for message in ws:
        await ws.send(f"{os.getpid()}:{message}")


app = FastAPI()


@app.websocket("/chat/{room}")
async def chat(websocket: FastAPIWebSocket, room: str) -> None:
    """An unchanged FastAPI endpoint: JSON in, JSON out."""
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"room": room, "got": data, "pid": os.getpid()})
    except WebSocketDisconnect:
        pass
