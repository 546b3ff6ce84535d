"""Runtimes for the middleware overhead benchmark (``benchmarks/middleware_overhead.sh``).

``bare`` has no middleware; ``full`` has ``default_stack(config)``; ``passthrough`` has one
middleware that only calls ``next``; each other runtime has one built-in alone. All serve
``GET /health`` (the built-in probe, a 2-byte text body) and ``GET /json`` (about 2 KB of
JSON encoded per request). The rate limit is set high enough never to refuse, so every
request pays for a bucket update; ``Runtime(access_log=False)`` keeps the runtime's own
access line out, so only ``logging_middleware`` logs.
"""

from __future__ import annotations

from typing import Any

from nessen import Config, Next, Request, Response, Runtime
from nessen.middleware import default_stack

CONFIG = Config.from_env(rate_limit_max=1_000_000_000)  # LOG_LEVEL etc. from the environment
DOCUMENT: list[dict[str, Any]] = [
    {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 2 == 0}
    for i in range(28)
]  # 1945 bytes as JSON


def build(**options: Any) -> Runtime:
    """A runtime with ``default_stack(CONFIG, **options)`` and the two routes."""
    try:  # no built-ins of the runtime's own: this stack is the only one
        runtime = Runtime(config=CONFIG, access_log=False, middleware=None)  # type: ignore[call-arg]
    except TypeError:  # a Runtime without the middleware argument installs none
        runtime = Runtime(config=CONFIG, access_log=False)
    for middleware in default_stack(CONFIG, **options):
        runtime.use(middleware)

    @runtime.route.get("/json")
    async def json_route(ctx: Request) -> Response:
        return Response.json(DOCUMENT)

    return runtime


OFF = {
    "request_id": False,
    "access_log": False,
    "security_headers": False,
    "rate_limit": False,
    "compression": False,
}


def only(name: str) -> Runtime:
    """A runtime with one built-in on and the rest off."""
    return build(**{**OFF, name: True})


bare = build(**OFF)
full = build()
full_sampled = build(access_log={"sample_2xx": 0.1})
"""The full stack logging one 2xx request in ten (``logging_middleware(sample_2xx=0.1)``)."""
request_id = only("request_id")
access_log = only("access_log")
security_headers = only("security_headers")
rate_limit = only("rate_limit")
compression = only("compression")


async def _passthrough(request: Request, next: Next) -> Response:
    return await next()


passthrough = build(**OFF)
"""One middleware that only calls ``next``: the cost of a pipeline layer itself."""
passthrough.use(_passthrough)


def _floor_layer() -> Any:
    """The output the default stack must produce on ``/health``, with none of its work:
    the same nine response fields (``Vary``, the seven security fields, ``X-Request-ID``)
    pre-encoded, and one access line of the usual length written to the log, both
    constant. Nothing the stack does can cost less than this."""
    import logging

    from nessen.observability.logs import direct_handler

    fields = [
        ("Vary", "Accept-Encoding"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("Permissions-Policy", "camera=(), geolocation=(), microphone=()"),
        (
            "Content-Security-Policy",
            "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
        ),
        ("X-XSS-Protection", "0"),
        ("X-Request-ID", "aec2be1c54a9-00000001"),
    ]
    block = "".join(f"{name}: {value}\r\n" for name, value in fields)
    keys = tuple(name.lower() for name, _ in fields)
    line = (
        "2026-11-29T12:00:00.000Z INFO    nessen.access GET /health 200 "
        "request_id=aec2be1c54a9-00000001 method=GET path=/health route=/health status=200 "
        "duration_ms=0.041 bytes=2 client_ip=127.0.0.1"
    )
    log = logging.getLogger("nessen.access")
    info = logging.INFO

    async def floor(request: Request, next: Next) -> Response:
        response = await next()
        response.add_encoded_fields(block, keys)
        direct = direct_handler(log)
        if direct is not None:
            direct[0].write_line(line, info)
        return response

    return floor


floor = build(**OFF)
"""One layer that adds the stack's fixed fields and writes a constant access line."""
floor.use(_floor_layer())
