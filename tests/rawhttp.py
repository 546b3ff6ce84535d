"""A tiny blocking HTTP/1.1 client over a raw socket, for tests that send exact bytes."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_names(self) -> list[str]:
        return [key.lower() for key, _ in self.headers]


class RawClient:
    """One TCP connection. ``send`` writes bytes; ``response`` reads one framed response."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed mid-head; got {self.buffer!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("connection closed mid-body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self, *, head_request: bool = False) -> RawResponse:
        """Read one response (skipping 1xx interim ones unless it is the only thing sent)."""
        while True:
            status_line = self._read_line().decode("latin-1")
            version, status, *rest = status_line.split(" ", 2)
            response = RawResponse(int(status), rest[0] if rest else "", version)
            while True:
                line = self._read_line()
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                response.headers.append((name, value.strip()))
            if 100 <= response.status < 200:
                return response
            break
        if head_request or response.status in (204, 304):
            return response
        length = response.header("content-length")
        if response.header("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line():
                        pass
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            response.body = body
        elif length is not None:
            response.body = self._read_exact(int(length))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def request(self, data: bytes, *, head_request: bool = False) -> RawResponse:
        self.send(data)
        return self.response(head_request=head_request)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF or reset) within ``timeout``.

        Any unread bytes are kept in ``buffer``.
        """
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def get(path: str = "/", host: str = "test", extra: str = "") -> bytes:
    """A minimal GET request's bytes."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
