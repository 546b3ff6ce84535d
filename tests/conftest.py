from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nessen import Response, Runtime
from nessen.testing import LiveServer

ServeFactory = Callable[..., LiveServer]


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """Start a runtime in a background thread: ``server = serve(runtime, max_body_bytes=10)``.

    Every server started is drained and stopped at the end of the test.
    """
    started: list[LiveServer] = []

    def start(runtime: Runtime | None = None, **config: Any) -> LiveServer:
        # Tests send many requests from one address: the default stack's rate limiter
        # (100 per minute per client) would turn them into 429s unless a test sets it.
        config.setdefault("rate_limit_max", 1_000_000_000)
        server = LiveServer(runtime or echo_runtime(), **config).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def echo_runtime() -> Runtime:
    """A runtime with a few routes the protocol tests use."""
    runtime = Runtime(access_log=False)

    @runtime.route.get("/")
    async def index(ctx):  # type: ignore[no-untyped-def]
        return Response.text("hello")

    @runtime.route.route(["POST", "PUT", "PATCH"], "/echo")
    async def echo(ctx):  # type: ignore[no-untyped-def]
        return Response(200, ctx.body, content_type="application/octet-stream")

    @runtime.route.get("/path")
    async def path(ctx):  # type: ignore[no-untyped-def]
        return Response.json({"path": ctx.path, "query": ctx.query_string.decode()})

    return runtime


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds.

    For state another thread or process changes (a server's log, a handler's list), where
    no event can be awaited from the test's thread. The deadline is generous: CI is busy.
    """
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
