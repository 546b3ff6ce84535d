"""The middleware pipeline: ``async (ctx, next) -> Response`` functions around one handler."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

from nessen.http import Handler, Request, Response

Next = Callable[[], Awaitable[Response]]
"""Calls the rest of the pipeline (inner middleware, then the router) for this request."""
Middleware = Callable[[Request, Next], Awaitable[Response]]
"""Code before ``await next()`` runs on the way in, code after it on the way out; not
calling ``next`` answers early (short-circuit)."""


def compose(handler: Handler, middleware: Sequence[Middleware]) -> Handler:
    """Return one handler in which ``middleware[0]`` is outermost (sees the request first).

    With no middleware, ``handler`` itself is returned: an empty pipeline costs nothing.
    """
    for mw in reversed(middleware):
        handler = functools.partial(_call, mw, handler)
    return handler


async def _call(mw: Middleware, inner: Handler, request: Request) -> Response:
    return await mw(request, functools.partial(inner, request))
