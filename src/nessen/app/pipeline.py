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
    Each layer is a plain function returning the middleware's coroutine, so a request
    costs one coroutine and one ``functools.partial`` per middleware, no wrapper coroutine.
    """
    for mw in reversed(middleware):
        handler = _layer(mw, handler)
    return handler


def _layer(mw: Middleware, inner: Handler) -> Handler:
    """Bind ``mw`` around ``inner``: ``request -> mw(request, next)``."""
    partial = functools.partial

    def layer(request: Request) -> Awaitable[Response]:
        return mw(request, partial(inner, request))

    return layer
