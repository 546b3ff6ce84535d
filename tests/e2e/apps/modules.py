"""Runtimes that say which optional libraries their process has loaded (``GET /modules``).

``bare`` and ``full`` are the benchmark's two rows (``Runtime(middleware=None)`` and the
default stack); ``asgi`` is a raw ASGI app; ``with_websocket`` (in
:mod:`tests.e2e.apps.modules_ws`) has a websocket route.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from nessen import Request, Response, Runtime

WATCHED = (
    "websockets",
    "brotli",
    "zstandard",
    "prometheus_client",
    # the standard library's, for features a plain HTTP server does not use
    "email",
    "hashlib",
    "html",
    "logging.config",
    "pickle",
    "tempfile",
)
"""Libraries a server loads only once it needs them (each costs resident memory)."""


def report(runtime: Runtime) -> Runtime:
    @runtime.route.get("/modules")
    async def modules(ctx: Request) -> Response:
        return Response.json(sorted(name for name in WATCHED if name in sys.modules))

    @runtime.route.get("/text")
    async def text(ctx: Request) -> Response:
        return Response.text("compressible " * 200)

    return runtime


bare = report(Runtime(middleware=None))
full = report(Runtime())


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app answering every request with the list ``/modules`` gives."""
    if scope["type"] != "http":
        raise ValueError(f"no {scope['type']} support")
    loaded = sorted(name for name in WATCHED if name in sys.modules)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": orjson.dumps(loaded)})
