"""A raw RSGI app for granian (its native interface, no framework): the Rust server's floor."""

from __future__ import annotations

from typing import Any

import orjson
from benchmarks.apps import payloads

TEXT = [("content-type", "text/plain; charset=utf-8")]
JSON = [("content-type", "application/json")]
BYTES = [("content-type", "application/octet-stream")]


async def app(scope: Any, protocol: Any) -> None:
    """Answer the five benchmark endpoints; 404 for anything else."""
    path = scope.path
    if path == "/health":
        protocol.response_bytes(200, TEXT, b"OK")
    elif path == "/api/data":
        protocol.response_bytes(200, JSON, orjson.dumps(payloads.data()))
    elif path.startswith("/users/"):
        protocol.response_bytes(200, JSON, orjson.dumps(payloads.user(path[7:])))
    elif path == "/json16k":
        protocol.response_bytes(200, JSON, orjson.dumps(payloads.ITEMS))
    elif path == "/echo" and scope.method == "POST":
        protocol.response_bytes(200, BYTES, await protocol())
    else:
        protocol.response_bytes(404, TEXT, b"Not Found")
