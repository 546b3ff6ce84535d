"""ASGI both ways.

- :class:`ASGIHost` serves any ASGI 3 application on Nessen's server, with its limits,
  deadlines, drain, access log, metrics and optional health endpoints
  (``nessen serve module:app``).
- :func:`runtime_asgi_app` (what ``Runtime.__call__`` delegates to) makes a
  :class:`~nessen.Runtime` an ASGI 3 application, so ``uvicorn module:runtime``,
  ``hypercorn module:runtime`` and ``granian --interface asgi module:runtime`` serve it.
"""

from nessen.asgi.app import runtime_asgi_app
from nessen.asgi.lifespan import Lifespan, LifespanStartupError
from nessen.asgi.server import ASGIHandler, ASGIHost
from nessen.asgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ASGIApp",
    "ASGIHandler",
    "ASGIHost",
    "Lifespan",
    "LifespanStartupError",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "runtime_asgi_app",
]
