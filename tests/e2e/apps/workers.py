"""A runtime for the multi-worker tests: each answer names the worker process."""

from __future__ import annotations

import asyncio
import logging
import os
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
