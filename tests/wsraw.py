"""A raw WebSocket client for protocol-edge tests: exact frames over a real socket.

Frames are built here from RFC 6455 §5.2 (not with the server's library), so a test can
send what no well-behaved client would: unmasked frames, reserved bits, bad opcodes,
invalid UTF-8, fragmented control frames.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
) -> bytes:
    """One frame (RFC 6455 §5.2), masked with a random key unless ``mask`` is False."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def fragmented(opcode: int, parts: list[bytes]) -> bytes:
    """One message in ``parts``: a first frame of ``opcode``, continuations, FIN on the last."""
    last = len(parts) - 1
    return b"".join(
        frame(opcode if index == 0 else CONT, part, fin=index == last)
        for index, part in enumerate(parts)
    )


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The close code of a close frame (None when it has no payload)."""
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


class RawWebSocket:
    """A WebSocket client on a raw socket: ``handshake()``, then ``send``/``read_frame``."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""
        self.status = 0
        self.head = b""

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def handshake(self, path: str = "/ws", *, extra: str = "", key: bytes | None = None) -> int:
        """Send an opening handshake; return the status (101 on success)."""
        key = key or base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buffer += data
        self.head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(self.head.split(b" ", 2)[1])
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1(key + GUID).digest())
            assert expected in self.head, self.head
        return self.status

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_frame(self) -> Frame:
        """The next frame from the server (servers do not mask, RFC 6455 §5.1)."""
        b0, b1 = self._read(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return Frame(bool(b0 & 0x80), b0 & 0x0F, self._read(length))

    def read_until_close(self) -> tuple[list[Frame], Frame]:
        """Frames up to the close frame: ``(others, close)``."""
        others = []
        while True:
            got = self.read_frame()
            if got.opcode == CLOSE:
                return others, got
            others.append(got)

    def at_eof(self) -> bool:
        """Whether the server closed the TCP connection (after what is buffered)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
