"""What every connection of one server shares: settings, handler, hooks, counters, clock."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from nessen.config import Config
from nessen.http import Handler, Request, Response
from nessen.http.forwarded import ProxyTrust
from nessen.server.h1.framing import http_date
from nessen.server.limits import HostAllowlist

if TYPE_CHECKING:
    from nessen.server.protocol import HttpProtocol

logger = logging.getLogger("nessen.server")


class ServerEvents:
    """Hooks through which the server reports what happened on the wire.

    The runtime subclasses this to feed the access log and the request statistics; the
    base class does nothing except build a bare 500 for :meth:`handler_error`. Hooks run on
    the event loop inside the connection's callbacks: they must be quick and must not raise.
    """

    def request_finished(
        self, request: Request, status: int, content_bytes: int, duration: float
    ) -> None:
        """A response was written.

        Args:
            request: The request answered.
            status: The status code sent.
            content_bytes: Content bytes sent (0 for HEAD, 204, 304).
            duration: Seconds from the request's first byte to the response written.
        """

    def request_rejected(
        self,
        reason: str,
        status: int,
        detail: str,
        client: tuple[str, int] | None,
        request: Request | None,
    ) -> None:
        """The server refused a request or cut a connection on its own.

        Args:
            reason: Short tag, e.g. ``"header_too_large"``, ``"request_timeout"``.
            status: Status code sent, or 0 when the connection was closed without one.
            detail: Human-readable cause; may quote attacker bytes, already repr-escaped.
            client: The peer's ``(address, port)``.
            request: The request, when its header section had been parsed.
        """

    def websocket_opened(self, websocket: Any) -> None:
        """A WebSocket was accepted and its ``101`` written.

        Args:
            websocket: The :class:`~nessen.websocket.connection.WebSocketConnection`.
        """

    def websocket_traffic(
        self, messages_in: int, bytes_in: int, messages_out: int, bytes_out: int
    ) -> None:
        """WebSocket messages and payload bytes moved since the last call.

        Called per connection, at each ping and at its end.
        """

    def websocket_closed(self, websocket: Any) -> None:
        """A WebSocket ended and its app's task is done.

        Its close code, who closed, its totals and duration are on ``websocket``.
        """

    def error_fields(self, raw_headers: list[tuple[bytes, bytes]]) -> str:
        r"""Extra field lines for an answer the server makes itself (413, 408, 503...).

                Those answers skip the handler and its middleware; the runtime uses this to add
                the CORS fields its policy would add for the request's ``Origin``. Called only on
                those error paths, never per request.

        Args:
                    raw_headers: The request's header fields as received (those parsed so far
                        when its header section was refused).

        Returns:
                    ``"Name: value
        "`` lines, ``""`` for none (the default).
        """
        return ""

    def handler_error(self, request: Request, exc: BaseException) -> Response:
        """Turn an exception from the handler (or an unsendable response) into a response.

        Returns:
            The response to send instead, normally a 500.
        """
        return Response.json({"error": "Internal Server Error"}, 500)

    def accept_failed(self, error: str) -> None:
        """``accept()`` failed, for lack of a resource or unexpectedly; accepting pauses.

        The server logs the burst itself (once when it starts, once when it ends); this is
        called for every failed call, to count them.

        Args:
            error: The errno name: ``"EMFILE"`` (the process's open-file limit),
                ``"ENFILE"`` (the system's), ``"ENOBUFS"``, ``"ENOMEM"``, or another one
                the server did not expect.
        """


class ServerState:
    """State shared by all connections of one :class:`~nessen.server.server.Server`.

    Attributes:
        config: The settings.
        handler: Called once per request.
        events: Where outcomes are reported.
        stream_bodies: Whether requests are built in streaming mode.
        connections: Open connections.
        active_requests: Requests whose handler has been called and not yet returned
            (a cancelled handler counts until its task is really gone).
        shutdown_pending: True once :meth:`Server.announce_shutdown` was called (the
            ``SHUTDOWN_DELAY`` before the drain): responses say ``Connection: close``.
        draining: True once :meth:`Server.drain` has begun.
        drain_started: ``time.monotonic()`` when the drain began (requests whose first byte
            came later are refused with 503).
        fixed_fields: The cached ``Date`` and ``Server`` lines, refreshed every second.
        tls: The TLS context new connections are wrapped in (``None``: plain HTTP).
    """

    def __init__(
        self,
        config: Config,
        handler: Handler,
        events: ServerEvents,
        *,
        stream_bodies: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        """The TLS context new connections are wrapped in (``None``: plain HTTP)."""
        self.scheme = "https" if tls is not None else "http"
        """The connections' own scheme, given to each request."""
        self.handler = handler
        self.events = events
        self.stream_bodies = stream_bodies
        """Streaming mode: dispatch at the end of the header section, content through a
        :class:`~nessen.server.body.RequestChannel` (see :mod:`nessen.server.body`)."""
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.active_requests = 0
        self.body_bytes = 0
        """Request content bytes buffered now, across connections (see body_buffer_bytes)."""
        self.shutdown_pending = False
        self.draining = False
        self.drain_started = float("inf")
        self.upgraded: set[asyncio.Transport] = set()
        """Connections handed to another protocol by a 101 (closed when the server stops)."""
        self._prune_upgraded_at = 64
        self.websockets: set[Any] = set()
        """Open WebSockets (:class:`~nessen.websocket.connection.WebSocketConnection`): they
        count against ``max_connections``, get 1001 at the drain, and are waited for; the
        server's ticker calls their ``tick(now)`` (keep-alive pings)."""
        self.answered = 0
        """Responses to the handlers' answers that went out (each counted once, when
        reported; the server's own refusals are not), since start."""
        self.idle = asyncio.Event()
        self.allowed_hosts = HostAllowlist(config.allowed_hosts)
        self.dropped_content_logged: set[tuple[int, str]] = set()
        """(status, route) pairs whose dropped content was logged (see policy.content_dropped)."""
        self.proxy = proxy_trust(config, self.allowed_hosts)
        """Who the client is behind trusted proxies; given to every Request (``None``: no
        proxy is trusted, the peer is always the client)."""
        self._server_field = f"Server: {config.server_header}\r\n" if config.server_header else ""
        self._extra_fields = "".join(f"{name}: {value}\r\n" for name, value in config.extra_headers)
        self.fixed_variants = ("", "", "", "")
        """:attr:`fixed_fields` without the server's ``Server`` (index ``OWN_SERVER``),
        without its ``Date`` (``OWN_DATE``), or without both: for a response that sets
        its own (see ``framing.claims_of``)."""
        self.keep_alive_field = f"Keep-Alive: timeout={max(1, int(config.idle_timeout))}\r\n"
        self._date_second = 0
        self.fixed_fields = ""
        self.refresh_date()

    def refresh_date(self) -> None:
        """Update :attr:`fixed_fields` when the wall-clock second has changed."""
        now = time.time()
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            date = f"Date: {http_date(second)}\r\n"
            server, extra = self._server_field, self._extra_fields
            self.fixed_fields = date + server + extra
            self.fixed_variants = (self.fixed_fields, date + extra, server + extra, extra)

    def adopt_upgraded(self, transport: asyncio.Transport) -> None:
        """Keep ``transport``, handed to another protocol, to close it when the server stops.

        Closed ones are dropped now and then (when the set has doubled), so the set stays
        about the size of the open ones.
        """
        upgraded = self.upgraded
        upgraded.add(transport)
        if len(upgraded) >= self._prune_upgraded_at:
            for gone in [t for t in upgraded if t.is_closing()]:
                upgraded.discard(gone)
            self._prune_upgraded_at = max(64, 2 * len(upgraded))

    def close_upgraded(self) -> int:
        """Abort every upgraded connection still open; return how many there were."""
        open_ones = [t for t in self.upgraded if not t.is_closing()]
        for transport in open_ones:
            transport.abort()
        self.upgraded.clear()
        return len(open_ones)

    def check_idle(self) -> None:
        """Set :attr:`idle` when draining and no connection or handler is left."""
        if (
            self.draining
            and not self.connections
            and self.active_requests == 0
            and not self.websockets
        ):
            self.idle.set()


def proxy_trust(config: Config, allowed_hosts: HostAllowlist | None = None) -> ProxyTrust | None:
    """The :class:`ProxyTrust` of ``config`` (``TRUST_PROXY``, ``PROXY_HEADERS``).

    Args:
        config: The settings.
        allowed_hosts: Forwarded hosts must pass it too (``ALLOWED_HOSTS``); built from
            ``config`` when ``None``.

    Returns:
        ``None`` when no proxy is trusted (``TRUST_PROXY=false``).
    """
    networks = config.trusted_networks
    if not networks:
        return None
    hosts = allowed_hosts if allowed_hosts is not None else HostAllowlist(config.allowed_hosts)
    return ProxyTrust(
        networks, headers=config.proxy_headers, allows_host=hosts.allows if hosts else None
    )


def warn_if_trusting_every_peer(config: Config) -> bool:
    """Log a warning when production trusts every peer's forwarding fields.

    With ``TRUST_PROXY=true`` any client reaching the port directly can name its own
    address (rate-limit key, logs), scheme and host. Called once at startup (by the
    supervisor, not each worker).

    Returns:
        Whether the warning was logged.
    """
    if config.trust_proxy is not True or not config.production:
        return False
    logger.warning(
        "TRUST_PROXY=true: every peer's %s fields are believed, so a client that reaches "
        "this port directly can choose its own address, scheme and host; list your proxies' "
        "networks instead (e.g. TRUST_PROXY=10.0.0.0/8)",
        "Forwarded" if config.proxy_headers == "forwarded" else "X-Forwarded-*",
    )
    return True
