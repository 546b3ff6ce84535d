"""The listening socket: what the port does when the server stops accepting, in-process.

A connection made with a blocking ``socket.create_connection`` while the test's coroutine
does not yield is completed by the kernel but not accepted (the server's accept callback
cannot run): it is "in the listen queue" when ``stop_accepting`` runs, by construction.
A ``dup()`` of the listening socket stands for another process's copy of it (a supervisor
and its workers share one open socket the same way).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any

import pytest

from nessen import Config, Request, Response, Runtime
from nessen.runtime import StartupError
from nessen.server import Server, ServerEvents

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


async def hello(request: Request) -> Response:
    return Response.text("hello")


def config() -> Config:
    return Config(host="127.0.0.1", port=0, rate_limit_max=1_000_000)


async def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends on ``sock`` until it closes (a reset raises)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        return await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()


def bound() -> socket.socket:
    """A socket bound to a free loopback port, not listening, as the supervisor leaves it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def queued_connection(address: tuple[str, int]) -> socket.socket:
    """A connection the kernel completed, with a request sent; nobody has accepted it."""
    sock = socket.create_connection(address, timeout=10.0)
    sock.sendall(REQUEST)
    return sock


async def test_a_closing_port_serves_what_is_queued_then_refuses() -> None:
    server = Server(hello, config())
    await server.start()
    waiting = queued_connection(server.address)
    server.stop_accepting()  # the drain's first step; no yield since the connect
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=10.0).close()
    drained = asyncio.ensure_future(server.drain(5.0))
    data = await read_response(waiting)
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.endswith(b"hello")
    assert (await drained).clean
    await server.close()


async def test_a_shared_socket_stops_listening_for_every_holder_when_the_service_stops() -> None:
    shared = bound()
    other_process_copy = shared.dup()  # the supervisor's, another worker's
    try:
        stopping = False
        server = Server(hello, config(), service_stopping=lambda: stopping)
        await server.start(shared)
        waiting = queued_connection(server.address)
        stopping = True  # SIGTERM to the supervisor
        server.stop_accepting()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=10.0).close()
        drained = asyncio.ensure_future(server.drain(5.0))
        assert (await read_response(waiting)).startswith(b"HTTP/1.1 200 ")
        assert (await drained).clean
        await server.close()
    finally:
        other_process_copy.close()


async def test_a_rolling_restart_leaves_the_shared_socket_to_the_others() -> None:
    shared = bound()
    other_process_copy = shared.dup()
    old = Server(hello, config(), service_stopping=lambda: False)
    await old.start(shared)
    waiting = queued_connection(old.address)
    old.stop_accepting()  # closes its copy only: the queue and the port stay
    later = queued_connection(old.address)
    new = Server(hello, config())
    await new.start(other_process_copy)  # the other worker takes both
    assert (await read_response(waiting)).startswith(b"HTTP/1.1 200 ")
    assert (await read_response(later)).startswith(b"HTTP/1.1 200 ")
    assert (await old.drain(5.0)).clean
    await old.close()
    await new.drain(5.0)
    await new.close()


async def test_the_shutdown_hooks_run_when_listening_fails_after_the_startup_hooks() -> None:
    # Two sockets bound to one port (SO_REUSEADDR): once the other listens, listen() on
    # ours fails, after the startup hooks ran; what they opened must be closed.
    ours = socket.socket()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ours.bind(("127.0.0.1", 0))
    rival = socket.socket()
    rival.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rival.bind(ours.getsockname())
    rival.listen()
    events: list[str] = []
    runtime = Runtime(config())

    @runtime.on_startup
    async def open_pool() -> None:
        events.append("opened")

    @runtime.on_shutdown
    async def close_pool() -> None:
        events.append("closed")

    try:
        with pytest.raises(StartupError, match="cannot listen on"):
            await runtime.start(sock=ours)
    finally:
        ours.close()
        rival.close()
    assert events == ["opened", "closed"]


class FlakyListener(socket.socket):
    """A listening socket whose first ``failures`` accept() calls fail with ``error``."""

    failures = 0
    error = errno.EIO

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(self.error, os.strerror(self.error))
        return super().accept()


class Recorder(ServerEvents):
    def __init__(self) -> None:
        self.accept_errors: list[str] = []

    def accept_failed(self, error: str) -> None:
        self.accept_errors.append(error)


@pytest.mark.parametrize("error", [errno.EMFILE, errno.EIO], ids=["EMFILE", "unexpected"])
async def test_a_failing_accept_pauses_and_retries_and_says_so_once(
    error: int, caplog: pytest.LogCaptureFixture
) -> None:
    listener = FlakyListener(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.failures = 3
    listener.error = error
    events = Recorder()
    server = Server(hello, config(), events)
    with caplog.at_level(logging.INFO, logger="nessen.server.server"):
        await server.start(listener)
        client = queued_connection(server.address)
        data = await read_response(client)  # served once accept() works again
    assert data.startswith(b"HTTP/1.1 200 "), data
    name = errno.errorcode[error]
    assert events.accept_errors == [name] * 3
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("accept() failed")]) == 1, messages
    assert len([m for m in messages if m.startswith("accepting again after")]) == 1, messages
    assert "3 accept() call(s) failed" in next(m for m in messages if "again" in m)
    await server.drain(1.0)
    await server.close()
