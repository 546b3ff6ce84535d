"""Server: listening sockets and accepting, connection registry, deadline ticker, drain.

The server accepts connections itself (a reader on each listening socket, ``accept()`` in
batches, each connection handed to the loop with ``loop.connect_accepted_socket``) rather
than through ``loop.create_server``. That is what lets it:

- bind before the startup hooks run and listen only after them (:func:`bind_listeners`,
  then :meth:`Server.start`), so a port in use is known before anything is opened and no
  connection is taken before the app is ready;
- see ``accept()`` fail for lack of file descriptors (EMFILE, ENFILE) and say so: libuv
  (under uvloop) instead accepts and closes the waiting connections silently, and uvloop
  closes its server for good on an error it does not expect. Here accepting pauses (50 ms,
  doubling to 1 s) while the connections wait in the kernel's listen queue, on any error
  that is not about one connection, the burst is logged once when it starts and once when
  it ends, and every failed call is reported to ``ServerEvents.accept_failed`` (counted in
  ``nessen_accept_errors_total``), as nginx and Go's net/http pause and retry;
- close the port for good at a drain: connections the kernel completed but nobody
  accepted yet are accepted (and served) first, then the socket is shut down, which for a
  socket shared by several processes stops it listening in all of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import resource
import socket
import ssl
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nessen.config import Config
from nessen.http import Handler
from nessen.server.h1.connection import LINGER_SECONDS
from nessen.server.protocol import INF, PROBE_RESERVE, HttpProtocol
from nessen.server.state import ServerEvents, ServerState

logger = logging.getLogger(__name__)

MAX_TICK = 0.25
"""Longest interval between deadline checks, in seconds."""
MIN_TICK = 0.01
BACKLOG = 2048
"""Connections accepted per readiness event at most are bounded by ``BACKLOG //
ACCEPT_BATCH`` batches (the listen queue's length itself is ``Config.backlog``)."""
ACCEPT_BATCH = 64
"""Connections accepted per readiness event at most, so other work on the loop (and other
workers sharing the socket) get their turn during a flood."""
ACCEPT_RETRY_START = 0.05
"""Seconds accepting pauses after ``accept()`` failed for lack of a resource; doubles while
it keeps failing, up to ``ACCEPT_RETRY_MAX``."""
ACCEPT_RETRY_MAX = 1.0
ADOPT_WAIT_ROUNDS = 100
"""Loop iterations a drain waits for accepted connections to reach ``connection_made``."""

FD_HEADROOM = 256
"""File descriptors a process needs beyond its client connections: standard streams, the
event loop's, listening sockets, the supervisor pipe, metrics files, and the app's own files
and outbound connections."""

_CLIENT_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.EHOSTUNREACH}
)
"""``accept()`` errors about one connection (it was reset while queued, or a firewall
refused it): skipped, as libuv does."""
_GONE_ERRNOS = frozenset({errno.EINVAL, errno.EBADF, errno.ENOTSOCK})
"""``accept()`` errors of a socket that no longer listens (another process sharing it shut
it down at a full stop): stop watching it."""


def open_files_needed(config: Config) -> int:
    """File descriptors one process needs to hold ``config.max_connections`` connections.

    The connections, the over-limit reserve kept for probes, the Redis pool when a store is
    on Redis, and ``FD_HEADROOM`` for everything else.
    """
    redis = (
        config.redis_pool_size if "redis" in (config.rate_limit_store, config.cache_store) else 0
    )
    return config.max_connections + PROBE_RESERVE + redis + FD_HEADROOM


def raise_open_file_limit(config: Config) -> tuple[int, int]:
    """Make the open-file limit (soft ``RLIMIT_NOFILE``) fit ``config.max_connections``.

    When the soft limit is below :func:`open_files_needed`, it is raised to the hard limit
    (as Go's runtime does at start; many hosts start processes with a soft limit of 1024
    and a hard one far above), and the change is logged. When even the hard limit is
    short, a warning names the limit and what is needed. Children forked later (the
    workers) inherit the limit.

    Returns:
        The soft and hard limits now.
    """
    needed = open_files_needed(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        before = soft
        for target in (hard, needed):
            if target == resource.RLIM_INFINITY or target <= soft:
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError):  # e.g. above the kernel's nr_open
                continue
            soft = target
            break
        if soft != before:
            logger.info(
                "raised the open-file limit (RLIMIT_NOFILE) from %d to %d: MAX_CONNECTIONS=%d "
                "needs about %d",
                before,
                soft,
                config.max_connections,
                needed,
            )
    if soft != resource.RLIM_INFINITY and soft < needed:
        room = soft - (needed - config.max_connections)
        logger.warning(
            "the open-file limit (RLIMIT_NOFILE) is %d (hard limit %d), below the %d that "
            "MAX_CONNECTIONS=%d needs (plus %d in reserve for probes and %d for files, "
            "Redis and logs): %s; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=, "
            "docker --ulimit nofile=) or lower MAX_CONNECTIONS",
            soft,
            hard,
            needed,
            config.max_connections,
            PROBE_RESERVE,
            needed - config.max_connections - PROBE_RESERVE,
            f"past about {room} connections, new ones wait in the listen queue"
            if room > 0
            else "the reserve alone is over it, so connections may wait in the listen queue "
            "from the first one",
        )
    return soft, hard


def listeners(config: Config) -> list[socket.socket]:
    """Bind, without listening, where ``config`` says to serve.

    ``config.unix_socket`` (:func:`bind_unix`), else the inherited ``config.listen_fd``
    (:func:`inherited_socket`), else :func:`bind_listeners` on ``host:port``.

    Raises:
        OSError: The address cannot be bound, the path is another process's socket or
            not a socket, or the descriptor is not a stream socket.
    """
    if config.unix_socket is not None:
        return [bind_unix(config.unix_socket, config.unix_socket_mode)]
    if config.listen_fd is not None:
        return [inherited_socket(config.listen_fd)]
    return bind_listeners(config.host, config.port)


def bind_unix(path: str, mode: int) -> socket.socket:
    """Bind a Unix stream socket at ``path`` with permissions ``mode`` (e.g. ``0o666``).

    A lock on ``PATH.lock`` (``flock``, held while this process or its workers live) keeps
    a second server off the path, even while the first is bound but not yet listening
    (its startup hooks run). A socket file then left by a process that is gone is removed
    first; :func:`release_unix` removes ours at exit, and only ours (same inode).

    Raises:
        OSError: ``path`` exists and is not a socket, another server holds its lock or
            listens on it (``EADDRINUSE``), or it cannot be bound.
    """
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise OSError(errno.EADDRINUSE, f"{path}: another server holds it") from None
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: nobody listens on it
        except OSError:
            pass  # let bind() say what is wrong
        else:
            raise OSError(errno.EADDRINUSE, f"{path}: another process is listening on it")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        os.close(lock)
        raise OSError(exc.errno, f"cannot bind the Unix socket {path}: {exc.strerror}") from None
    sock.setblocking(False)
    _BOUND_UNIX[path] = (os.stat(path).st_ino, lock)
    return sock


_BOUND_UNIX: dict[str, tuple[int, int]] = {}
"""Unix socket paths :func:`bind_unix` bound: ``path -> (inode, lock descriptor)``."""


def release_unix(sock: socket.socket) -> None:
    """Remove the file of a Unix socket :func:`bind_unix` made here, if it is still that one.

    An inherited socket (``LISTEN_FD``), or a file another server has since put at the
    path, is left alone.
    """
    if sock.family != socket.AF_UNIX:
        return
    with contextlib.suppress(OSError):
        path = sock.getsockname()
        bound = _BOUND_UNIX.pop(path, None) if isinstance(path, str) else None
        if bound is not None and os.stat(path).st_ino == bound[0]:
            os.unlink(path)


def inherited_socket(fd: int) -> socket.socket:
    """The stream socket open at descriptor ``fd`` (systemd's fd 3, a parent's), adopted.

    Raises:
        OSError: ``fd`` is not open, not a socket, or not a stream socket.
    """
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        raise OSError(errno.ENOTSOCK, f"descriptor {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(errno.EPROTOTYPE, f"descriptor {fd} is not a stream socket")
    name = sock.getsockname()
    if (isinstance(name, tuple) and name[1] == 0) or name in ("", b""):
        sock.detach()
        raise OSError(errno.EINVAL, f"descriptor {fd} is a socket bound to no address")
    sock.setblocking(False)
    return sock


def socket_address(sock: socket.socket) -> tuple[str, int]:
    """``(host, port)`` of a bound socket; ``(path, 0)`` for a Unix socket."""
    name = sock.getsockname()
    if isinstance(name, str):
        return name, 0
    return str(name[0]), int(name[1])


def shown_address(sock: socket.socket, scheme: str) -> str:
    """The address for a log line: ``http://127.0.0.1:3000``, ``http://[::1]:80``, ``unix:PATH``."""
    host, port = socket_address(sock)
    if sock.family == socket.AF_UNIX:
        return f"unix:{host}"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Bind, without listening, a TCP socket to each address ``host`` resolves to.

    The addresses are those ``loop.create_server(host, port)`` would bind
    (``getaddrinfo`` with ``AI_PASSIVE``): one socket for ``0.0.0.0`` or an address, one per
    family for a name such as ``localhost``. IPv6 sockets are IPv6-only (as asyncio, uvloop
    and nginx make them), ``SO_REUSEADDR`` is set, and with ``port=0`` every socket gets the
    port the first one was given. A bound socket that does not listen refuses connections,
    so the port is held (and a port in use is detected) before anything else starts.

    Args:
        host: An IP address or host name.
        port: TCP port; 0 picks a free one.

    Returns:
        The bound, non-blocking sockets, at least one.

    Raises:
        OSError: The name does not resolve, or an address cannot be bound (in use, not
            permitted); sockets already bound are closed.
    """
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    seen: set[tuple[int, object]] = set()
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the same free port on every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(exc.strerror or str(exc)).lower()}",
                ) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:  # pragma: no cover - getaddrinfo returns at least one or raises
        raise OSError(errno.EADDRNOTAVAIL, f"{host!r} resolves to no address")
    return sockets


@dataclass(frozen=True, slots=True)
class DrainResult:
    """How a drain ended.

    Attributes:
        cut: Requests still in a handler (or streaming) when the deadline passed, cancelled;
            one whose response had not begun was answered 503 with ``Retry-After`` and
            ``Connection: close``.
        connections: Connections that were still open then, closed. A connection in its
            lingering close (every response written, only the client's FIN awaited) is
            closed then and not counted: nothing was lost on it.
        served: Responses that went out whole during the drain.
        upgraded: Connections handed to another protocol by a 101 that is not a WebSocket,
            closed at the end of the drain; not a failure of the drain (HTTP cannot finish
            them).
        websockets: WebSockets open when the drain began, each sent a close frame with 1001
            (those still open at the deadline are counted in ``connections`` too).
    """

    cut: int
    connections: int
    served: int = field(default=0, compare=False)
    upgraded: int = field(default=0, compare=False)
    websockets: int = field(default=0, compare=False)

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
        service_stopping: For a listening socket shared with other processes (a worker's,
            inherited from the supervisor): whether the whole service is stopping, asked
            when accepting would begin and when the drain begins. True: the socket is not
            listened on any more, and the drain shuts it down for every process sharing it
            (after accepting what is queued); False: the drain closes only this process's
            copy and the others keep accepting (a rolling restart). ``None``: the socket is
            this server's own, or the caller's (see :meth:`start`).
        tls: Serve HTTPS: each accepted connection is wrapped in this context (see
            :func:`nessen.server.tls.server_context`), its handshake bounded by
            ``headers_timeout``; requests get the scheme ``https``. ``None``: plain HTTP.
    """

    def __init__(
        self,
        handler: Handler,
        config: Config,
        events: ServerEvents | None = None,
        *,
        on_tick: Callable[[], None] | None = None,
        stream_bodies: bool = False,
        service_stopping: Callable[[], bool] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.service_stopping = service_stopping
        self.stream_bodies = stream_bodies
        self.on_tick = on_tick
        """Called on every deadline tick (a worker's heartbeat to its supervisor)."""
        self.config = config
        self.events = events or ServerEvents()
        self._state: ServerState | None = None
        self._sockets: list[socket.socket] = []
        self._owned = False  # the sockets are this server's alone: shut down at the drain
        self._reading: list[socket.socket] = []  # those with an accept reader on the loop
        self._closed = False
        self._adopting = 0  # accepted connections not yet handed to their protocol
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = ACCEPT_RETRY_START
        self._burst_started = 0.0  # loop time accept() first failed for lack of a resource
        self._burst_failures = 0
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
                # WebSockets' keep-alive pings and pong deadlines (0: none)
                *(t / 4 for t in (config.ws_ping_interval, config.ws_ping_timeout) if t > 0),
            ),
        )
        self.address: tuple[str, int] = (config.host, config.port)
        """The bound ``(host, port)``; the real port once started with ``port=0``;
        ``(path, 0)`` on a Unix socket."""
        self.shown = ""

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
        """Open connections now, WebSockets included."""
        state = self._state
        return len(state.connections) + len(state.websockets) if state else 0

    @property
    def websocket_count(self) -> int:
        """Open WebSockets now."""
        return len(self._state.websockets) if self._state else 0

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` has begun."""
        return self._state.draining if self._state else False

    async def start(
        self,
        sock: socket.socket | Sequence[socket.socket] | None = None,
        *,
        owned: bool = False,
    ) -> None:
        """Listen and start accepting, on ``sock`` or on ``config.host:config.port``.

        Args:
            sock: A socket, or several, already bound (and maybe listening): a worker's
                inherited one, those of :func:`bind_listeners`, or the caller's. ``None``
                binds ``config.host:config.port`` (the sockets are then owned).
            owned: The sockets are this server's alone (bound for it): at the drain it
                accepts what is queued, then shuts them down. Otherwise the drain closes
                this process's copy only (the caller's, or the service's when
                ``service_stopping`` says it is not stopping).

        Raises:
            OSError: The address cannot be bound or listened on (in use, not permitted);
                sockets this call bound are closed, given ones are left to the caller.
        """
        loop = asyncio.get_running_loop()
        if sock is None:
            sockets = listeners(self.config)
            # An inherited socket is its parent's too (systemd keeps queueing on it for
            # the next start): the drain closes this copy, never shuts it down.
            owned = self.config.listen_fd is None
        else:
            sockets = [sock] if isinstance(sock, socket.socket) else list(sock)
        stopping = self.service_stopping
        listen = stopping is None or not stopping()  # no new listener once the service stops
        try:
            if listen:
                for listener in sockets:
                    listener.listen(self.config.backlog)
        except OSError:
            if sock is None:
                for listener in sockets:
                    listener.close()
            raise
        self._sockets = sockets
        self._owned = owned
        self._state = ServerState(
            self.config, self.handler, self.events, stream_bodies=self.stream_bodies, tls=self.tls
        )
        self.address = socket_address(sockets[0])
        self.shown = shown_address(sockets[0], "https" if self.tls is not None else "http")
        """The address for log lines: ``http://HOST:PORT``, ``https://...``, ``unix:PATH``."""
        if listen:
            for listener in sockets:
                listener.setblocking(False)
                loop.add_reader(listener.fileno(), self._on_acceptable, listener)
                self._reading.append(listener)
        self._ticker = loop.call_later(self._tick, self._on_tick)

    # --- accepting ------------------------------------------------------------------------

    def _on_acceptable(self, listener: socket.socket) -> None:
        """Accept up to ``ACCEPT_BATCH`` connections waiting on ``listener``."""
        self._accept(listener, ACCEPT_BATCH)

    def _accept(self, listener: socket.socket, limit: int) -> bool:
        """Accept up to ``limit`` connections; False once ``listener`` has none left."""
        for _ in range(limit):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                if self._burst_failures:
                    self._end_burst()
                return False
            except OSError as exc:
                if exc.errno in _CLIENT_ERRNOS:
                    continue
                if exc.errno in _GONE_ERRNOS:  # shut down by another process sharing it
                    self._unwatch(listener)
                    return False
                # Out of a resource, or unexpected: pause and retry, never stop for good
                # (uvloop closes its server on an error it does not expect, silently).
                self._accept_failed(exc)
                return False
            if self._burst_failures:
                self._end_burst()
            self._adopt(conn)
        return True

    def _adopt(self, conn: socket.socket) -> None:
        """Hand an accepted connection to the loop with a new protocol."""
        self._adopting += 1
        self.state.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        state = self.state
        tls = state.tls
        peer: tuple[str, int] | None = None
        try:
            if tls is None:
                transport, _ = await state.loop.connect_accepted_socket(
                    lambda: HttpProtocol(state), conn
                )
            else:
                with contextlib.suppress(OSError):
                    address = conn.getpeername()
                    peer = (str(address[0]), int(address[1]))
                transport, _ = await state.loop.connect_accepted_socket(
                    lambda: HttpProtocol(state),
                    conn,
                    ssl=tls,
                    ssl_handshake_timeout=self.config.headers_timeout,
                    # A close waits this long for the client's close_notify (asyncio's
                    # default, 30 s, held the connection's slot that long after a 408).
                    ssl_shutdown_timeout=LINGER_SECONDS,
                )
        except Exception as exc:  # the client was gone before the transport existed
            if tls is not None:
                self._handshake_failed(peer, exc)
            else:
                logger.debug("accepted connection lost before it was set up: %r", exc)
            conn.close()
            return
        finally:
            self._adopting -= 1
        if self._closed:  # set up after close() aborted every connection
            transport.abort()

    def _handshake_failed(self, client: tuple[str, int] | None, exc: Exception) -> None:
        """A TLS handshake timed out or failed: count it as a rejection, with its reason.

        A client that connects and never completes the handshake is cut after
        ``headers_timeout``, as one that never sends a header section is.
        """
        # asyncio raises TimeoutError, uvloop ConnectionAbortedError("... taking longer ...")
        if isinstance(exc, TimeoutError) or "taking longer" in str(exc):
            reason = "tls_handshake_timeout"
            detail = f"no TLS handshake within {self.config.headers_timeout:g} s (headers_timeout)"
        else:
            reason = "tls_handshake_failed"
            detail = f"TLS handshake failed: {getattr(exc, 'reason', None) or exc!r}"
        self.state.events.request_rejected(reason, 0, detail, client, None)

    def reload_tls(self, context: ssl.SSLContext) -> None:
        """Wrap connections accepted from now on in ``context`` (a renewed certificate).

        Connections already open keep the context they were made with: none is dropped.
        """
        self.tls = context
        if self._state is not None:
            self._state.tls = context

    def _accept_failed(self, exc: OSError) -> None:
        """``accept()`` failed (out of a resource, or unexpectedly): count, pause, log once."""
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.events.accept_failed(name)
        state = self.state
        self._burst_failures += 1
        if self._burst_failures == 1:
            self._burst_started = state.loop.time()
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            logger.error(
                "accept() failed: %s (%d connections open; open-file limit RLIMIT_NOFILE "
                "%d, hard limit %d): accepting paused, retried every %g-%g s; new "
                "connections wait in the listen queue",
                exc,
                len(state.connections),
                soft,
                hard,
                ACCEPT_RETRY_START,
                ACCEPT_RETRY_MAX,
                extra={"reason": name.lower()},
            )
        for listener in list(self._reading):
            state.loop.remove_reader(listener.fileno())
        if self._retry is None:
            self._retry = state.loop.call_later(self._retry_delay, self._retry_accepting)
            self._retry_delay = min(ACCEPT_RETRY_MAX, self._retry_delay * 2)

    def _retry_accepting(self) -> None:
        """After a pause: try at once (an empty queue still tells whether accept() works)."""
        self._retry = None
        for listener in list(self._reading):
            if self._retry is not None:  # failed again: paused again
                return
            self._accept(listener, ACCEPT_BATCH)
        if self._retry is None:
            loop = self.state.loop
            for listener in self._reading:
                loop.add_reader(listener.fileno(), self._on_acceptable, listener)

    def _end_burst(self) -> None:
        seconds = self.state.loop.time() - self._burst_started
        logger.warning(
            "accepting again after %.1f s; %d accept() call(s) failed",
            seconds,
            self._burst_failures,
        )
        self._burst_failures = 0
        self._retry_delay = ACCEPT_RETRY_START

    def _unwatch(self, listener: socket.socket) -> None:
        if listener in self._reading:
            self._reading.remove(listener)
            if self._retry is None:
                self.state.loop.remove_reader(listener.fileno())

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
            conn.core.shed()  # found idle: let its parser go (see H1Connection.shed)
        for websocket in list(state.websockets):
            websocket.tick(now)  # its keep-alive ping, or the pong to it, is due
        if self.on_tick is not None:
            self.on_tick()
        self._ticker = state.loop.call_later(self._tick, self._on_tick)

    def stop_accepting(self) -> None:
        """Stop taking connections and close this process's listening sockets.

        When the port closes for good (the sockets are owned, or ``service_stopping``
        says the whole service stops), connections the kernel has completed but nobody
        accepted yet are accepted first (they are served like any connection taken just
        before a drain), then the sockets are shut down: for a socket shared by several
        processes that stops it listening in all of them, so every later connection
        attempt is refused (ECONNREFUSED) instead of waiting in a queue nobody reads.
        Otherwise only this process's copy is closed and the others keep accepting from
        the queue. Open connections are untouched.
        """
        if not self._sockets:
            return
        loop = self.state.loop
        stopping = self.service_stopping
        # An inherited socket (LISTEN_FD) is never shut down: its parent keeps it.
        for_good = (self._owned or (stopping is not None and stopping())) and (
            self.config.listen_fd is None
        )
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        else:
            for listener in self._reading:
                loop.remove_reader(listener.fileno())
        if for_good:
            for listener in list(self._reading):
                for _ in range(BACKLOG // ACCEPT_BATCH):  # a bound under a flood
                    if not self._accept(listener, ACCEPT_BATCH):
                        break
            if self._retry is not None:  # out of descriptors: what is queued is reset
                self._retry.cancel()
                self._retry = None
            for listener in self._sockets:
                with contextlib.suppress(OSError):  # not listening, or shut down already
                    listener.shutdown(socket.SHUT_RDWR)
        self._reading.clear()
        for listener in self._sockets:
            if for_good and self._owned:
                release_unix(listener)
            listener.close()
        self._sockets = []

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
        answered = state.answered
        if not state.draining:
            state.draining = True
            state.drain_started = time.monotonic()
        self.stop_accepting()
        # Before yielding to the loop, so that a request read from an idle keep-alive
        # connection in between finds it marked (and is served, not refused with 503:
        # a rolling restart under keep-alive load lost requests to that gap).
        for conn in list(state.connections):
            conn.on_drain()
        # Connections accepted just before (or by stop_accepting) reach connection_made in
        # callbacks that are already scheduled: let them run, so they are counted below
        # (and, made while draining, get one request each, soon).
        await asyncio.sleep(0)
        for _ in range(ADOPT_WAIT_ROUNDS):
            if not self._adopting:
                break
            await asyncio.sleep(0)
        for conn in list(state.connections):
            conn.on_drain()
        going_away = list(state.websockets)
        for websocket in going_away:
            websocket.going_away()
        end = state.loop.time() + grace_period
        while state.connections or state.active_requests or state.websockets:
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
        for websocket in list(state.websockets):
            aborted += 1
            websocket.cut("drain_timeout", "still open when SHUTDOWN_TIMEOUT passed")
            if websocket.handler_task is not None:
                websocket.handler_task.cancel()
        upgraded = state.close_upgraded()  # another protocol's: nothing HTTP can finish
        return DrainResult(
            cut=cut,
            connections=aborted,
            served=state.answered - answered,
            upgraded=upgraded,
            websockets=len(going_away),
        )

    def announce_shutdown(self) -> None:
        """A drain is coming (``SHUTDOWN_DELAY`` runs): send clients elsewhere, still serving.

        From now on the last response on each persistent connection says ``Connection:
        close`` (requests already queued or arriving on it are answered first), so clients
        reconnect through the load balancer, which by the drain has taken this process out
        of rotation. New connections are still accepted and served.
        """
        if self._state is not None:
            self._state.shutdown_pending = True

    async def close(self) -> None:
        """Stop the ticker and the listener and abort every connection at once."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.stop_accepting()
        self._closed = True
        state = self._state
        if state is not None:
            for conn in list(state.connections):
                conn.cut()
            for websocket in list(state.websockets):
                websocket.cut("server_closed", "the server closed")
                if websocket.handler_task is not None:
                    websocket.handler_task.cancel()
            state.close_upgraded()


__all__ = [
    "INF",
    "DrainResult",
    "Server",
    "bind_listeners",
    "open_files_needed",
    "raise_open_file_limit",
]
