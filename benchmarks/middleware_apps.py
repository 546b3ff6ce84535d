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
