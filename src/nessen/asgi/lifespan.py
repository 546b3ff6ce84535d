"""The ASGI lifespan protocol (spec 2.0) run for an app served by :class:`~nessen.asgi.ASGIHost`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nessen.asgi.types import LIFESPAN_VERSION, ASGIApp, Message
from nessen.runtime import StartupError

logger = logging.getLogger("nessen.asgi")

LIFESPAN_MODES = ("auto", "on", "off")
"""How an app's lifespan protocol is run: see :class:`Lifespan`."""


class LifespanStartupError(StartupError):
    """The application's lifespan startup failed.

    It answered ``lifespan.startup.failed``, or raised after it had received
    ``lifespan.startup`` (its exception is then the ``__cause__``).
    """


class Lifespan:
    """Runs an app's lifespan protocol (ASGI lifespan spec 2.0) in a task of its own.

    Detection follows the spec ("if an exception is raised when calling the application
    callable with a lifespan scope, the server must continue but not send any lifespan
    events"), told apart from a failing startup by whether the app took the startup event:

    - it raises, or returns, before it has received ``lifespan.startup`` (``assert
      scope["type"] == "http"``, Django's ValueError): lifespan is unsupported, the app is
      served without it (one info line);
    - it answers ``lifespan.startup.failed``, or raises after it received the event: the
      startup failed (:class:`LifespanStartupError`, one message; the app's exception, if
      any, as its cause). Starlette and FastAPI do both: they answer failed, then raise.

    Args:
        app: The ASGI 3 application.
        state: ``scope["state"]``, shared with the requests (each gets a copy).
        mode: ``"auto"`` (the above), ``"on"`` (an app that does not support lifespan
            fails the start, as uvicorn's ``--lifespan on``) or ``"off"`` (no lifespan
            events are sent).

    Raises:
        ValueError: Another ``mode``.
    """

    def __init__(self, app: ASGIApp, state: dict[str, Any], mode: str = "auto") -> None:
        if mode not in LIFESPAN_MODES:
            raise ValueError(f"lifespan mode {mode!r}: must be one of auto, on, off")
        self.app = app
        self.state = state
        self.mode = mode
        self.supported = mode != "off"
        """False once the app turned out not to support lifespan."""
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._received_startup = False
        self._failed = False  # answered lifespan.startup.failed
        self._error: BaseException | None = None  # what the app raised during its startup

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer.

        Raises:
            LifespanStartupError: ``lifespan.startup.failed`` (its message is the error's,
                unless the app also raised: then its exception, chained), or the app raised
                after it received ``lifespan.startup``.
        """
        if self.mode == "off":
            return
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
            error = self._error
            if error is not None:  # its exception says it better than a traceback's text
                detail = f"{type(error).__name__}: {error}"
            else:
                detail = str(answer.get("message", "")) or "(no message)"
            raise LifespanStartupError(f"ASGI lifespan startup failed: {detail}") from error
        elif self.mode == "on":  # "unsupported", where it is required
            raise LifespanStartupError(
                "ASGI lifespan startup failed: the app does not support the lifespan "
                "protocol, and lifespan mode is on (--lifespan on)"
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
            if self._started:
                logger.error(
                    "ASGI lifespan task raised", exc_info=(type(exc), exc, exc.__traceback__)
                )
                self._settle({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            elif self._failed or self._received_startup:  # a failed startup, said once
                self._error = exc
                self._settle({"type": "lifespan.startup.failed", "message": repr(exc)})
            else:
                self.supported = False
                logger.info(
                    "ASGI 'lifespan' protocol appears unsupported (%s: %s): serving without it",
                    type(exc).__name__,
                    exc,
                )
                self._settle({"type": "unsupported"})
            if not isinstance(exc, Exception):
                raise
            return
        if self._started:
            self._settle({"type": "lifespan.shutdown.complete"})
        elif not self._failed:
            self.supported = False
            logger.info(
                "ASGI app returned from 'lifespan' without answering lifespan.startup: "
                "serving without it"
            )
            self._settle({"type": "unsupported"})

    def _settle(self, message: Message) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(message)

    async def _receive(self) -> Message:
        message = await self._events.get()
        if message["type"] == "lifespan.startup":
            self._received_startup = True
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self._started = kind == "lifespan.startup.complete"
            self._failed = not self._started
        elif kind not in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"ASGI app sent an unexpected lifespan message {kind!r}")
        self._settle(message)
