"""Routing, the middleware pipeline and the lifecycle: the app core, which knows no sockets."""

from nessen.app.application import App
from nessen.app.lifecycle import Lifecycle, Readiness, State
from nessen.app.pipeline import Middleware, Next, compose
from nessen.app.routing import Route, Router

__all__ = [
    "App",
    "Lifecycle",
    "Middleware",
    "Next",
    "Readiness",
    "Route",
    "Router",
    "State",
    "compose",
]
