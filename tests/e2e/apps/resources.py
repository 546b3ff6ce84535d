"""A runtime whose startup hook opens something and whose shutdown hook closes it; both
moments are printed to stderr, so a test reading the server's output sees them."""

from __future__ import annotations

import sys

from nessen import Request, Response, Runtime

runtime = Runtime()


@runtime.on_startup
async def open_pool() -> None:
    print("resources: pool opened", file=sys.stderr, flush=True)


@runtime.on_shutdown
async def close_pool() -> None:
    print("resources: pool closed", file=sys.stderr, flush=True)


@runtime.route.get("/pid")
async def pid(ctx: Request) -> Response:
    return Response.text("ok")
