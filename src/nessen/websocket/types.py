"""What a WebSocket's users and its connection share, without its framing.

:class:`WebSocketSettings` (the limits and timers), :data:`Message` and
:class:`WebSocketDisconnect`. Importing this module does not import ``websockets``: the
framing (:mod:`nessen.websocket.connection`) is loaded only by a websocket route, an ASGI
app being hosted, or an upgrade, so a server without WebSockets does not carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nessen.config import Config


class WebSocketDisconnect(Exception):
    """The WebSocket is closed: raised by ``receive`` and ``send`` once it is.

    Attributes:
        code: The close code (RFC 6455 §7.4): the client's, the server's, or 1006 when
            the connection ended without a closing handshake.
        reason: The close reason, possibly empty.
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with {self.code}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """The WebSocket limits and timers, from :class:`~nessen.config.Config` (``WS_*``).

    Sizes are bytes, durations seconds; 0 turns a timer off where the setting allows it.
    """

    max_message_bytes: int = 1024 * 1024
    max_frame_bytes: int = 1024 * 1024
    send_buffer_bytes: int = 64 * 1024
    receive_queue: int = 16
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    idle_timeout: float = 0.0
    close_timeout: float = 5.0
    send_timeout: float = 30.0
    allowed_origins: frozenset[str] = frozenset()
    compression: bool = True

    @classmethod
    def from_config(cls, config: Config) -> WebSocketSettings:
        """The settings ``config`` holds (``WS_*``, and ``SEND_TIMEOUT``)."""
        return cls(
            max_message_bytes=config.ws_max_message_bytes,
            max_frame_bytes=config.ws_max_frame_bytes or config.ws_max_message_bytes,
            send_buffer_bytes=config.ws_send_buffer_bytes,
            receive_queue=config.ws_receive_queue,
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
            idle_timeout=config.ws_idle_timeout,
            close_timeout=config.ws_close_timeout,
            send_timeout=config.send_timeout,
            allowed_origins=config.ws_allowed_origins,
            compression=config.ws_compression,
        )


Message = str | bytes
"""A WebSocket message: ``str`` for a text one, ``bytes`` for a binary one."""
