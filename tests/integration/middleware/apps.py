"""Runtimes and log capture for the over-real-HTTP middleware tests."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from nessen import Config, HTTPError, Request, Response, Runtime
from nessen.middleware import default_stack
from nessen.observability.logs import ConsoleFormatter, JsonFormatter

PAYLOAD = orjson.dumps(
    [{"id": i, "name": f"user {i}", "email": f"user{i}@example.com"} for i in range(40)]
)
"""A ~2.4 KB JSON document: above the default 1024-byte compression threshold."""


def plain_runtime(config: Config | None = None) -> Runtime:
    """A runtime with no built-in middleware, so a test's own stack is the only one."""
    try:
        return Runtime(config=config or Config(), access_log=False, middleware=None)  # type: ignore[call-arg]
    except TypeError:  # a Runtime that installs no built-ins of its own
        return Runtime(config=config or Config(), access_log=False)


def stacked_runtime(config: Config | None = None, **options: Any) -> Runtime:
    """A runtime with ``default_stack(config, **options)`` and a few routes."""
    config = config or Config()
    runtime = plain_runtime(config)
    for middleware in default_stack(config, **options):
        runtime.use(middleware)
    release = threading.Event()
    runtime.release = release  # type: ignore[attr-defined]

    @runtime.route.get("/data")
    async def data(ctx: Request) -> Response:
        return Response(200, PAYLOAD, content_type="application/json")

    @runtime.route.get("/small")
    async def small(ctx: Request) -> Response:
        return Response.json({"ok": True})

    @runtime.route.get("/pre-encoded")
    async def pre_encoded(ctx: Request) -> Response:
        return Response(
            200,
            gzip.compress(PAYLOAD, mtime=0),
            headers={"Content-Encoding": "gzip"},
            content_type="application/json",
        )

    @runtime.route.get("/events")
    async def events(ctx: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield b"data: first\n\n" * 20
            await asyncio.to_thread(release.wait, 5.0)  # until the client saw the first
            yield b"data: second\n\n" * 20

        return Response.streaming(stream(), content_type="text/event-stream")

    @runtime.route.get("/boom")
    async def boom(ctx: Request) -> Response:
        raise RuntimeError("handler bug")

    @runtime.route.get("/teapot")
    async def teapot(ctx: Request) -> Response:
        raise HTTPError(418, "short and stout")

    @runtime.route.get("/{path:path}")
    async def echo_path(ctx: Request) -> Response:
        return Response.json({"path": ctx.path})

    return runtime


class Capture:
    """Formatted lines of one logger, in JSON and console form, plus the raw records."""

    def __init__(self) -> None:
        self.json = io.StringIO()
        self.console = io.StringIO()
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` records came: the server writes a request's access line once
        the response is out, which can be just after the client has read it."""
        with self.changed:
            arrived = self.changed.wait_for(lambda: len(self.records) >= count, timeout)
        assert arrived, f"{len(self.records)} of {count} records within {timeout} s"

    def json_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.json.getvalue().splitlines()]


class _Keep(logging.Handler):
    def __init__(self, capture: Capture) -> None:
        super().__init__()
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        with self.capture.changed:
            self.capture.records.append(record)
            self.capture.changed.notify_all()


@contextmanager
def capture_logs(
    name: str = "nessen.access", level: int = logging.INFO, *, expect: int = 0
) -> Iterator[Capture]:
    """Attach JSON and console handlers (the real formatters) to logger ``name``.

    With ``expect``, leaving the block waits (10 s at most) for that many records first.
    """
    capture = Capture()
    logger = logging.getLogger(name)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(capture.json),
        logging.StreamHandler(capture.console),
        _Keep(capture),
    ]
    handlers[0].setFormatter(JsonFormatter())
    handlers[1].setFormatter(ConsoleFormatter())
    saved = (logger.level, logger.propagate)
    logger.setLevel(level)
    logger.propagate = False
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield capture
        if expect:
            capture.wait_for(expect)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
