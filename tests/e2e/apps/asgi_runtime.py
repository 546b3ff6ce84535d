"""A Runtime for serving under ASGI servers (uvicorn, hypercorn, granian) in the tests.

Its startup and shutdown hooks print a line to stderr, so a test sees that the host's
lifespan ran them; ``/hang`` waits until cancelled (at most ``HANG_LIMIT`` seconds), which
only the Runtime's own request deadline does under an ASGI server; ``/stream`` streams
4 KiB every 10 ms for up to a minute.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from nessen import Request, Response, Runtime

HANG_LIMIT = 60.0

runtime = Runtime()


@runtime.on_startup
async def opened() -> None:
    print("asgi-runtime: startup hook ran", file=sys.stderr, flush=True)


@runtime.on_shutdown
async def closed() -> None:
    print("asgi-runtime: shutdown hook ran", file=sys.stderr, flush=True)


@runtime.route.post("/echo")
async def echo(ctx: Request) -> Response:
    return Response(200, ctx.body, content_type="application/octet-stream")


@runtime.route.get("/hang")
async def hang(ctx: Request) -> Response:
    await asyncio.sleep(HANG_LIMIT)
    return Response.text("too late")


@runtime.route.get("/who")
async def who(ctx: Request) -> Response:
    return Response.json(
        {"client_ip": ctx.client_ip, "peer_ip": ctx.peer_ip, "scheme": ctx.scheme, "host": ctx.host}
    )


@runtime.route.get("/stream")
async def stream(ctx: Request) -> Response:
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(6000):  # at most a minute
            yield b"s" * 4096
            await asyncio.sleep(0.01)

    return Response.streaming(pieces(), content_type="text/plain")
