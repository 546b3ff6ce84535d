"""An in-memory ``asyncio.Transport`` for driving ``HttpProtocol`` from bytes, no socket."""

from __future__ import annotations

import asyncio
from typing import Any


class RecordingTransport(asyncio.Transport):
    """Records what is written and what is done to the connection.

    Attributes:
        out: Every byte written, in order.
        closed: Whether ``close``, ``abort`` or ``write_eof`` was called.
        written_after_close: Whether anything was written once ``closed``.
        protocol: The protocol given to ``set_protocol`` (a 101's hand-over), if any.
        reading: Whether the protocol lets the transport read (``pause_reading`` and
            ``resume_reading`` toggle it).
        write_limits: The ``(high, low)`` marks the protocol set, if any.
    """

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.written_after_close = False
        self.protocol: asyncio.BaseProtocol | None = None
        self.reading = True
        self.write_limits: tuple[int | None, int | None] | None = None

    def write(self, data: Any) -> None:
        if self.closed:
            self.written_after_close = True
        self.out += data

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.write_limits = (high, low)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
