"""Runtimes for the drain tests in ``tests/e2e/test_shutdown.py``.

Both have the same routes: ``/pid``; ``/stream``, ``STREAM_PIECES`` pieces of
``PIECE`` bytes, ``STREAM_GAP`` seconds apart (about 1 s in all), logging ``stream
started``; ``/until-drain``, which logs ``until-drain handler entered`` and returns once the
server has begun its drain (at most ``WAIT_LIMIT`` seconds); ``/hang``, which waits until
cancelled (at most ``WAIT_LIMIT`` seconds). ``runtime``'s shutdown hook logs and returns;
``slow_hook``'s sleeps ``SLOW_HOOK_SECONDS``, far past any SHUTDOWN_TIMEOUT the tests set.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

from nessen import Request, Response, Runtime

STREAM_PIECES = 10
STREAM_GAP = 0.1
PIECE = b"s" * 100
WAIT_LIMIT = 60.0
SLOW_HOOK_SECONDS = 30.0
POLL = 0.01

logger = logging.getLogger("tests.e2e.draining")


def _build(hook_seconds: float) -> Runtime:
    runtime = Runtime()

    @runtime.route.get("/pid")
    async def pid(ctx: Request) -> Response:
        return Response.text(str(os.getpid()))

    async def pieces() -> AsyncIterator[bytes]:
        logger.info("stream started")
        for index in range(STREAM_PIECES):
            if index:
                await asyncio.sleep(STREAM_GAP)
            yield PIECE

    @runtime.route.get("/stream")
    async def stream(ctx: Request) -> Response:
        return Response.streaming(pieces(), content_type="application/octet-stream")

    @runtime.route.get("/until-drain")
    async def until_drain(ctx: Request) -> Response:
        logger.info("until-drain handler entered")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_LIMIT
        # The server's own flag, not the lifecycle's DRAINING: that one is set a moment
        # before the server drains (and after SHUTDOWN_DELAY it is set long before).
        while not (runtime.server is not None and runtime.server.draining):
            if loop.time() > deadline:
                return Response.text("finished without a drain")
            await asyncio.sleep(POLL)
        return Response.text("finished during the drain")

    @runtime.route.get("/hang")
    async def hang(ctx: Request) -> Response:
        logger.info("hang handler entered")
        await asyncio.sleep(WAIT_LIMIT)
        return Response.text("hang finished")

    @runtime.on_shutdown
    async def shutdown_hook() -> None:
        logger.info("shutdown hook started")
        try:
            await asyncio.sleep(hook_seconds)
        except asyncio.CancelledError:
            logger.info("shutdown hook cancelled")
            raise
        logger.info("shutdown hook finished")

    return runtime


runtime = _build(0.0)
slow_hook = _build(SLOW_HOOK_SECONDS)
