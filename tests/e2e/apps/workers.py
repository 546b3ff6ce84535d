"""A runtime for the multi-worker tests: each answer names the worker process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from nessen import Request, Response, Runtime

runtime = Runtime()
logger = logging.getLogger("tests.e2e.workers")


@runtime.route.get("/pid")
async def pid(ctx: Request) -> Response:
    return Response.text(str(os.getpid()))


@runtime.route.get("/slow")
async def slow(ctx: Request) -> Response:
    logger.info("slow handler entered")
    await asyncio.sleep(float(ctx.query.get("seconds", "1")))
    return Response.text(str(os.getpid()))


@runtime.route.get("/block")
async def block(ctx: Request) -> Response:
    time.sleep(float(ctx.query.get("seconds", "5")))  # noqa: ASYNC251 - blocks the loop on purpose
    return Response.text("unblocked")


_released: asyncio.Event | None = None


@runtime.route.get("/hold")
async def hold(ctx: Request) -> Response:
    """Answer once this worker gets SIGUSR1: an in-flight request a test releases at will."""
    global _released
    if _released is None:
        _released = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _released.set)
    logger.info("hold handler entered")
    await _released.wait()
    return Response.text(str(os.getpid()))


# A runtime whose workers cannot start while the file named by NESSEN_TEST_FAIL_MARKER
# exists: a deploy whose new workers fail, for the rolling-restart tests.
fragile = Runtime()


@fragile.route.get("/pid")
async def fragile_pid(ctx: Request) -> Response:
    return Response.text(str(os.getpid()))


@fragile.on_startup
async def check_marker() -> None:
    marker = os.environ.get("NESSEN_TEST_FAIL_MARKER", "")
    if marker and os.path.exists(marker):  # noqa: ASYNC240 - one stat at startup
        raise RuntimeError(f"refusing to start: {marker} exists")
