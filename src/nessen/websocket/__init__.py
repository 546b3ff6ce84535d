"""WebSockets (RFC 6455, permessage-deflate RFC 7692) on Nessen's server.

- :class:`WebSocket`: what a websocket route's handler gets
  (``@runtime.route.websocket("/ws/{room}")``, ``async def chat(ws)``).
- :class:`WebSocketDisconnect`: raised by ``receive``/``send`` once the WebSocket closed,
  with its close code.
- :mod:`nessen.websocket.handshake`: the opening handshake, as pure functions.
- :mod:`nessen.websocket.connection`: the connection after the ``101``: framing (by
  ``websockets``' sans-I/O layer), limits, flow control, pings, the closing handshake.
  Loaded (with ``websockets``) by the first websocket route or hosted ASGI app, not by
  importing this package.
"""

from typing import TYPE_CHECKING, Any

from nessen.websocket.api import WebSocket, WebSocketEndpoint, WebSocketHandler
from nessen.websocket.types import WebSocketDisconnect, WebSocketSettings

if TYPE_CHECKING:
    from nessen.websocket.connection import WebSocketConnection

__all__ = [
    "WebSocket",
    "WebSocketConnection",
    "WebSocketDisconnect",
    "WebSocketEndpoint",
    "WebSocketHandler",
    "WebSocketSettings",
]


def __getattr__(name: str) -> Any:
    """``WebSocketConnection``, imported (with ``websockets``) when first asked for."""
    if name == "WebSocketConnection":
        from nessen.websocket.connection import WebSocketConnection

        return WebSocketConnection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
