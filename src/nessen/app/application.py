"""App: a router and a middleware list, composed into the one handler the server calls."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

from nessen.app.lifecycle import Lifecycle, Readiness
from nessen.app.pipeline import Middleware, compose
from nessen.app.routing import Router
from nessen.http import Handler, Request, Response

logger = logging.getLogger("nessen.app")

Hook = Callable[[], Awaitable[None]]
"""A startup or shutdown hook: ``async () -> None``."""


class App:
    """Routes, middleware, lifecycle and readiness checks; no sockets.

    Args:
        expose_errors: Put the exception and stack trace in 500 bodies (development only;
            the log always has them).
    """

    def __init__(self, *, expose_errors: bool = False) -> None:
        self.router = Router()
        self.router.on_error = self.error_response
        self.middleware: list[Middleware] = []
        self.lifecycle = Lifecycle()
        self.readiness = Readiness()
        self.startup_hooks: list[Hook] = []
        self.shutdown_hooks: list[Hook] = []
        self.expose_errors = expose_errors
        self._handler: Handler | None = None

    def use(self, middleware: Middleware) -> None:
        """Append ``middleware``; it runs inside the ones added before it.

        Raises:
            RuntimeError: The pipeline was already built (the server is running).
        """
        if self._handler is not None:
            raise RuntimeError("middleware must be added before the server starts")
        self.middleware.append(middleware)

    @property
    def handler(self) -> Handler:
        """The composed pipeline: middleware in order, then the router (built once)."""
        handler = self._handler
        if handler is None:
            handler = self._handler = compose(self.router.dispatch, self.middleware)
        return handler

    def error_response(self, request: Request, exc: BaseException) -> Response:
        """Log ``exc`` with the request id and build the 500 response.

        The body is ``{"error": "Internal Server Error", "request_id": ...}``; with
        ``expose_errors`` it also carries ``detail`` and ``traceback``.
        """
        logger.error(
            "unhandled %s in handler for %s %s",
            type(exc).__name__,
            request.method,
            request.path,
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"request_id": request.id, "method": request.method, "path": request.path},
        )
        body: dict[str, object] = {"error": "Internal Server Error", "request_id": request.id}
        if self.expose_errors:
            body["detail"] = f"{type(exc).__name__}: {exc}"
            body["traceback"] = traceback.format_exception(exc)
        return Response.json(body, 500)
