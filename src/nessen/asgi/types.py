"""The ASGI 3 callable's shapes (asgiref's ``ASGI3Application``, without the dependency)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
"""The connection scope: ``{"type": "http", "method": "GET", ...}`` (ASGI spec §"HTTP")."""
Message = MutableMapping[str, Any]
"""One event: ``{"type": "http.request", "body": b"...", "more_body": False}``."""
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application: ``async app(scope, receive, send) -> None``."""

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
"""The ``scope["asgi"]`` of HTTP scopes: ASGI 3.0, HTTP spec 2.3 (``send`` after a
disconnect is a no-op rather than raising ``OSError``, which is 2.4's rule)."""
LIFESPAN_VERSION = {"version": "3.0", "spec_version": "2.0"}
"""The ``scope["asgi"]`` of the lifespan scope (lifespan state is spec 2.0)."""
