"""Apps that ``nessen serve`` runs in the Redis end-to-end tests."""

from __future__ import annotations

import os

from nessen import Request, Response, Runtime

limited = Runtime()
"""The default stack (rate limit on, cache off); RATE_LIMIT_STORE picks where buckets live."""

cached = Runtime(middleware={"cache": {"ttl": 30.0}})
"""The default stack with the response cache on; CACHE_STORE picks where entries live."""


@limited.route.get("/hit")
async def hit(ctx: Request) -> Response:
    """A small answer, so the test measures the limiter rather than a page."""
    return Response.text("ok")


@cached.route.get("/page")
async def page(ctx: Request) -> Response:
    """Name the process that rendered the page, so a hit shows who filled the cache."""
    return Response.text(f"rendered by {os.getpid()}")


@cached.route.get("/reset")
async def reset(ctx: Request) -> Response:
    """A page built from the Host field, as password-reset links often are."""
    return Response.text(f"reset at http://{ctx.headers.get('host')}/reset?token=")
