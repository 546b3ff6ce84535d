"""Runtimes for the end-to-end tests.

``runtime`` has a ``/slow`` route that logs ``slow handler entered`` and then waits for the
drain to begin (at most ``SLOW_LIMIT`` seconds), so a test can send SIGTERM while a request
is certainly in flight; ``/hang`` waits until cancelled (at most ``HANG_LIMIT`` seconds).
``broken`` has a startup hook that raises.
"""

from __future__ import annotations

import asyncio
import logging
import os

from nessen import Request, Response, Runtime, State

SLOW_LIMIT = 10.0
HANG_LIMIT = 60.0

logger = logging.getLogger("tests.e2e.sample")

runtime = Runtime()
_drain_began = asyncio.Event()  # binds to the serving loop on first use


def _on_change(old: State, new: State) -> None:
    if new == State.DRAINING:
        _drain_began.set()


runtime.lifecycle.on_change(_on_change)


@runtime.route.get("/slow")
async def slow(ctx: Request) -> Response:
    logger.info("slow handler entered")
    waiter = asyncio.ensure_future(_drain_began.wait())
    done, _ = await asyncio.wait({waiter}, timeout=SLOW_LIMIT)
    if not done:
        waiter.cancel()
        return Response.text("finished without a drain")
    return Response.text("finished after the drain began")


@runtime.route.get("/timeout")
async def with_timeout(ctx: Request) -> Response:
    async with asyncio.timeout(5.0):
        await asyncio.sleep(0)
    return Response.text("asyncio.timeout works")


@runtime.route.get("/current-task")
async def current_task(ctx: Request) -> Response:
    return Response.text("in a task" if asyncio.current_task() is not None else "no task")


@runtime.route.get("/hang")
async def hang(ctx: Request) -> Response:
    logger.info("hang handler entered")
    await asyncio.sleep(HANG_LIMIT)
    return Response.text("hang finished")


@runtime.route.get("/fail")
async def fail(ctx: Request) -> Response:
    raise RuntimeError("secret detail: db password is hunter2")


broken = Runtime()


@broken.on_startup
async def connect_database() -> None:
    raise RuntimeError("database unreachable")


not_a_runtime = {"status": 200}


@runtime.route.post("/submit")
async def submit(ctx: Request) -> Response:
    """POST only: a GET here is the router's 405 (the HTTP lint test checks it)."""
    return Response.json({"ok": True})


@runtime.route.get("/environ")
async def environ(ctx: Request) -> Response:
    """The names of the environment variables that start with LISTEN (socket activation)."""
    return Response.json(sorted(name for name in os.environ if name.startswith("LISTEN")))
