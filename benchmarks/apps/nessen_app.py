"""Nessen runtimes: ``bare`` (routing only) and ``full`` (the default stack as shipped).

``full`` is ``Runtime()`` exactly as ``nessen serve`` builds it: request id, access log
(through stdlib logging to stderr, which the runner sends to /dev/null), security headers,
rate limit (the runner raises RATE_LIMIT_MAX so nothing is refused) and compression, plus
Prometheus metrics. ``bare`` is ``Runtime(middleware=None)``: routing, the health
endpoints and metrics, no middleware.
"""

from __future__ import annotations

from benchmarks.apps import payloads

from nessen import Request, Response, Runtime


def _routes(runtime: Runtime) -> Runtime:
    @runtime.route.get("/api/data")
    async def api_data(ctx: Request) -> Response:
        return Response.json(payloads.data())

    @runtime.route.get("/users/{id}")
    async def user(ctx: Request) -> Response:
        return Response.json(payloads.user(ctx.params["id"]))

    @runtime.route.get("/json16k")
    async def json16k(ctx: Request) -> Response:
        return Response.json(payloads.ITEMS)

    @runtime.route.post("/echo")
    async def echo(ctx: Request) -> Response:
        return Response(200, ctx.body, content_type="application/octet-stream")

    return runtime


bare = _routes(Runtime(middleware=None))
full = _routes(Runtime())
