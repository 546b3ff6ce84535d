"""Server: the listening socket, the connection registry, the deadline ticker, and drain."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from nessen.config import Config
from nessen.http import Handler
from nessen.server.protocol import INF, HttpProtocol
from nessen.server.state import ServerEvents, ServerState

logger = logging.getLogger(__name__)

MAX_TICK = 0.25
"""Longest interval between deadline checks, in seconds."""
MIN_TICK = 0.01
BACKLOG = 2048


@dataclass(frozen=True, slots=True)
class DrainResult:
    """How a drain ended.

    Attributes:
        cut: Requests still in a handler (or streaming) when the deadline passed, cancelled.
        connections: Connections that were still open then, aborted. A connection in its
            lingering close (every response written, only the client's FIN awaited) is
            closed then and not counted: nothing was lost on it.
    """

    cut: int
    connections: int

    @property
    def clean(self) -> bool:
        """Whether everything finished before the deadline."""
        return self.cut == 0 and self.connections == 0


class Server:
    """An HTTP/1.1 server on one listening socket, calling ``handler`` for each request.

    It knows nothing of routes: it parses, enforces the limits in ``config``, calls
    ``handler(request)`` and writes the :class:`~nessen.http.Response` back. Outcomes go to
    ``events``. Deadlines (header, content, idle, handler, send) are checked by one ticker
    every ``min(0.25 s, shortest timeout / 4)``, not by a timer per connection, so each
    deadline fires within that interval after it passes.

    Args:
        handler: ``async (Request) -> Response``.
        config: Limits, timeouts, address.
        events: Hooks for finished and rejected requests; a no-op when ``None``.
        on_tick: Called on every deadline tick, on the event loop (so it stops being called
            when the loop is stuck: a heartbeat).
        stream_bodies: Streaming mode, for handlers that read content as it arrives (the
            ASGI host): each request is a :class:`~nessen.server.body.StreamedRequest`,
            dispatched when its header section is complete, with its content in
            ``request.channel`` (bounded; reading pauses while the handler lags) and
            ``request.body`` empty. Limits and deadlines are the same. Off by default: a
            native handler gets the whole content in ``request.body``.
    """

    def __init__(
        self,
        handler: Handler,
        config: Config,
        events: ServerEvents | None = None,
        *,
        on_tick: Callable[[], None] | None = None,
        stream_bodies: bool = False,
    ) -> None:
        self.handler = handler
        self.stream_bodies = stream_bodies
        self.on_tick = on_tick
        """Called on every deadline tick (a worker's heartbeat to its supervisor)."""
        self.config = config
        self.events = events or ServerEvents()
        self._state: ServerState | None = None
        self._listener: asyncio.Server | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._tick = max(
            MIN_TICK,
            min(
                MAX_TICK,
                config.headers_timeout / 4,
                config.body_timeout / 4,
                config.request_timeout / 4,
                config.idle_timeout / 4,
                config.send_timeout / 4,
            ),
        )
        self.address: tuple[str, int] = (config.host, config.port)
        """The bound ``(host, port)``; the real port once started with ``port=0``."""

    @property
    def state(self) -> ServerState:
        """Shared connection state (available once started)."""
        if self._state is None:
            raise RuntimeError("server not started")
        return self._state

    @property
    def active_requests(self) -> int:
        """Requests in handlers now."""
        return self._state.active_requests if self._state else 0

    @property
    def connection_count(self) -> int:
        """Open connections now."""
        return len(self._state.connections) if self._state else 0

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun."""
        return self._state.draining if self._state else False

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind ``config.host:config.port`` (or use ``sock``) and start accepting.

        Raises:
            OSError: The address cannot be bound (in use, not permitted).
        """
        loop = asyncio.get_running_loop()
        state = self._state = ServerState(
            self.config, self.handler, self.events, stream_bodies=self.stream_bodies
        )
        if sock is not None:
            self._listener = await loop.create_server(
                lambda: HttpProtocol(state), sock=sock, backlog=BACKLOG
            )
        else:
            self._listener = await loop.create_server(
                lambda: HttpProtocol(state),
                self.config.host,
                self.config.port,
                backlog=BACKLOG,
                reuse_address=True,
            )
        name = self._listener.sockets[0].getsockname()
        self.address = (str(name[0]), int(name[1]))
        self._ticker = loop.call_later(self._tick, self._on_tick)

    def _on_tick(self) -> None:
        state = self._state
        if state is None:
            return
        state.refresh_date()
        now = state.loop.time()
        for conn in list(state.connections):
            if conn.read_deadline <= now:
                conn.on_read_deadline()
            if conn.handler_deadline <= now:
                conn.on_handler_timeout()
            if conn.write_deadline <= now:
                conn.on_write_timeout()
        if self.on_tick is not None:
            self.on_tick()
        self._ticker = state.loop.call_later(self._tick, self._on_tick)

    def stop_accepting(self) -> None:
        """Close the listening socket; open connections are untouched."""
        if self._listener is not None:
            self._listener.close()

    async def drain(self, grace_period: float) -> DrainResult:
        """Stop accepting, let in-flight requests finish, close the rest after ``grace_period``.

        Idle persistent connections are closed after ``DRAIN_IDLE_GRACE`` (0.5 s), a
        request that arrives before that being served with ``Connection: close``. A busy
        one is closed once its last
        response is written: that response says ``Connection: close``, unless its head went
        out before the drain (a long stream); requests pipelined behind it are answered
        first. A request whose first byte arrives after this call on a connection that has
        served one gets 503 + ``Connection: close``. Closes that follow a response linger
        (RFC 9112 §9.6) until the client closes too, ``LINGER_SECONDS`` or the deadline,
        whichever comes first.

        Args:
            grace_period: Seconds to wait for in-flight requests.

        Returns:
            What had to be cut when the deadline passed (zeros for a clean drain). A
            connection still lingering then is closed but not counted.
        """
        state = self.state
        if not state.draining:
            state.draining = True
            state.drain_started = time.monotonic()
        self.stop_accepting()
        # Before yielding to the loop, so that a request read from an idle keep-alive
        # connection in between finds it marked (and is served, not refused with 503:
        # a rolling restart under keep-alive load lost requests to that gap).
        for conn in list(state.connections):
            conn.on_drain()
        # Connections accepted just before the listener closed register in callbacks that
        # are already scheduled: let them run, so they are drained like the others.
        await asyncio.sleep(0)
        for conn in list(state.connections):
            conn.on_drain()
        end = state.loop.time() + grace_period
        while state.connections or state.active_requests:
            remaining = end - state.loop.time()
            if remaining <= 0:
                break
            state.idle.clear()
            state.check_idle()
            try:
                await asyncio.wait_for(state.idle.wait(), remaining)
            except TimeoutError:
                break
        cut = aborted = 0
        for conn in list(state.connections):
            if conn.lingering:  # its responses are out; only the client's FIN is awaited
                conn.end_linger()
                continue
            aborted += 1
            if conn.cut():
                cut += 1
        if state.active_requests > cut:
            cut = state.active_requests
        return DrainResult(cut=cut, connections=aborted)

    async def close(self) -> None:
        """Stop the ticker and the listener and abort every connection at once."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.stop_accepting()
        state = self._state
        if state is not None:
            for conn in list(state.connections):
                conn.cut()
        if self._listener is not None:
            await self._listener.wait_closed()


__all__ = ["INF", "DrainResult", "Server"]
