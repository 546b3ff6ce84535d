"""A raw ASGI 3 app (no framework) for uvicorn and ``nessen serve``: the cost of hosting ASGI."""

from __future__ import annotations

from typing import Any

import orjson
from benchmarks.apps import payloads

TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]
BYTES = [(b"content-type", b"application/octet-stream")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer the five benchmark endpoints; 404 for anything else; lifespan ignored."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/health":
        await _send(send, 200, TEXT, b"OK")
    elif path == "/api/data":
        await _send(send, 200, JSON, orjson.dumps(payloads.data()))
    elif path.startswith("/users/"):
        await _send(send, 200, JSON, orjson.dumps(payloads.user(path[7:])))
    elif path == "/json16k":
        await _send(send, 200, JSON, orjson.dumps(payloads.ITEMS))
    elif path == "/echo" and scope["method"] == "POST":
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        await _send(send, 200, BYTES, b"".join(chunks))
    else:
        await _send(send, 404, TEXT, b"Not Found")


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
