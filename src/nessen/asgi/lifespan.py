"""The ASGI lifespan protocol (spec 2.0) run for an app served by :class:`~nessen.asgi.ASGIHost`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nessen.asgi.types import LIFESPAN_VERSION, ASGIApp, Message

logger = logging.getLogger("nessen.asgi")


class LifespanStartupError(Exception):
    """The application answered ``lifespan.startup.failed`` or raised after starting up."""


class Lifespan:
    """Runs an app's lifespan protocol (ASGI lifespan spec 2.0) in a task of its own.

    Detection works as uvicorn's ``--lifespan auto``: an app that raises, or returns,
    before answering ``lifespan.startup`` is taken not to support lifespan, and is served
    without it (logged at info level). One that answers ``lifespan.startup.failed`` fails
    the startup.

    Args:
        app: The ASGI 3 application.
        state: ``scope["state"]``, shared with the requests (each gets a copy).
    """

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.supported = True
        """False once the app turned out not to support lifespan."""
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer.

        Raises:
            LifespanStartupError: ``lifespan.startup.failed`` (its message is the error's),
                or the app raised after having started up.
        """
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._task = loop.create_task(self._run())
        await self._events.put({"type": "lifespan.startup"})
        answer = await self._answer
        kind = answer["type"]
        if kind == "lifespan.startup.complete":
            self._started = True
            logger.info("ASGI lifespan startup complete")
        elif kind == "lifespan.startup.failed":
            raise LifespanStartupError(
                f"ASGI lifespan startup failed: {answer.get('message', '') or '(no message)'}"
            )
        # "unsupported": served without lifespan

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer (or the app's end).

        A failure is logged, not raised: the process is stopping anyway.
        """
        task = self._task
        if not self.supported or not self._started or task is None or task.done():
            return
        self._answer = asyncio.get_running_loop().create_future()
        await self._events.put({"type": "lifespan.shutdown"})
        try:
            answer = await self._answer
        except asyncio.CancelledError:
            task.cancel()
            raise
        if answer["type"] == "lifespan.shutdown.failed":
            logger.error("ASGI lifespan shutdown failed: %s", answer.get("message", ""))
        else:
            logger.info("ASGI lifespan shutdown complete")

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": LIFESPAN_VERSION, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            self._settle({"type": "lifespan.shutdown.failed", "message": "cancelled"})
            raise
        except BaseException as exc:
            if not self._started:
                self.supported = False
                logger.info(
                    "ASGI 'lifespan' protocol appears unsupported (%s: %s): serving without it",
                    type(exc).__name__,
                    exc,
                )
                self._settle({"type": "unsupported"})
            else:
                logger.error(
                    "ASGI lifespan task raised", exc_info=(type(exc), exc, exc.__traceback__)
                )
                self._settle({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            if not isinstance(exc, Exception):
                raise
            return
        if not self._started:
            self.supported = False
            logger.info("ASGI app returned from 'lifespan' without answering: serving without it")
            self._settle({"type": "unsupported"})
        else:
            self._settle({"type": "lifespan.shutdown.complete"})

    def _settle(self, message: Message) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(message)

    async def _receive(self) -> Message:
        return await self._events.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self._started = kind == "lifespan.startup.complete"
        elif kind not in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"ASGI app sent an unexpected lifespan message {kind!r}")
        self._settle(message)
