"""The app's side of a WebSocket: :class:`WebSocket`, and its route handler.

``@runtime.route.websocket("/ws/{room}")`` registers a :class:`WebSocketEndpoint`.

A websocket route is a GET route whose HTTP handler checks the opening handshake
(RFC 6455 §4.2.1) and the ``Origin``, then runs the app's ``async def handler(ws)`` in
its own task. The upgrade request went through the middleware like any other (an auth,
rate-limit or CORS-like check may refuse it there). The handler decides: ``await
ws.accept()`` makes the server write the ``101``; ``await ws.close()`` before that, or an
:class:`~nessen.errors.HTTPError` raised, refuses it with an HTTP answer (403, or the
error's status). From the ``101`` on, the WebSocket lives on, outside the request's
deadline, until either side closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import orjson

from nessen.http import Headers, Query, Request, Response
from nessen.websocket.handshake import HandshakeError, Offer, origin_allowed, read_offer
from nessen.websocket.types import Message, WebSocketDisconnect, WebSocketSettings

if TYPE_CHECKING:
    from nessen.websocket.connection import WebSocketConnection

logger = logging.getLogger("nessen.websocket")

HOSTED_WEBSOCKET: ContextVar[Channel | None] = ContextVar("nessen_hosted_websocket", default=None)
"""Set while a :class:`~nessen.runtime.Runtime` served as an ASGI app runs the upgrade
request of a ``websocket`` scope: the :class:`~nessen.asgi.websocket.HostedWebSocket`
that stands in for the connection (the host server holds it)."""

WebSocketHandler = Callable[["WebSocket"], Awaitable[Any]]
"""A websocket route's handler: ``async (ws: WebSocket) -> None``."""


class Channel(Protocol):
    """What :class:`WebSocket` drives.

    A :class:`WebSocketConnection` on Nessen's server, or a
    :class:`~nessen.asgi.websocket.HostedWebSocket` under another ASGI server.
    """

    request: Request
    offer: Offer
    decision: asyncio.Future[Response]
    subprotocol: str | None
    close_code: int | None
    handler_task: asyncio.Task[None] | None

    @property
    def is_open(self) -> bool: ...  # noqa: D102
    def ending_code(self) -> int: ...  # noqa: D102
    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None: ...  # noqa: D102
    async def receive(self) -> Message: ...  # noqa: D102
    async def send(self, message: Message) -> None: ...  # noqa: D102
    async def close(self, code: int = 1000, reason: str = "") -> None: ...  # noqa: D102
    def refuse(self, response: Response) -> None: ...  # noqa: D102
    def run(self, handler: Callable[..., Awaitable[Any]], *args: Any) -> asyncio.Task[None]: ...  # noqa: D102


class WebSocket:
    """One WebSocket, as a websocket route's handler sees it.

    The request fields are the upgrade request's: :attr:`params`, :attr:`query`,
    :attr:`headers`, :attr:`client_ip`, :attr:`id` (the request id, in its access line
    and its WebSocket's), :attr:`path`.

    Messages are ``str`` (text) or ``bytes`` (binary). ``receive*`` and ``send*`` raise
    :class:`~nessen.websocket.WebSocketDisconnect` (with the close code) once the
    WebSocket is closed; ``async for message in ws`` ends quietly instead.
    """

    __slots__ = ("_conn", "request")

    def __init__(self, connection: Channel) -> None:
        self._conn = connection
        self.request: Request = connection.request
        """The upgrade request."""

    # --- the request ---------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The request id of the upgrade request."""
        return self.request.id

    @property
    def path(self) -> str:
        """The upgrade request's path."""
        return self.request.path

    @property
    def params(self) -> dict[str, Any]:
        """The route's path parameters, converted (``{room}`` -> ``ws.params["room"]``)."""
        return self.request.params

    @property
    def query(self) -> Query:
        """The query parameters of the request target."""
        return self.request.query

    @property
    def headers(self) -> Headers:
        """The upgrade request's header fields."""
        return self.request.headers

    @property
    def client_ip(self) -> str:
        """The client's address, behind trusted proxies (``TRUST_PROXY``) as for HTTP."""
        return self.request.client_ip

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered (``Sec-WebSocket-Protocol``), in its order."""
        return self._conn.offer.subprotocols

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol accepted, or ``None``."""
        return self._conn.subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1006: the connection ended without a close frame)."""
        conn = self._conn
        return (
            conn.close_code if conn.close_code is not None or conn.is_open else conn.ending_code()
        )

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent."""
        return self._conn.is_open

    # --- the handshake --------------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Accept: the server writes the ``101``; returns once it went out.

        Args:
            subprotocol: One of :attr:`subprotocols`, or ``None``.
            headers: More fields for the ``101``: a mapping or ``(name, value)`` pairs.

        Raises:
            ValueError: ``subprotocol`` was not offered by the client.
            RuntimeError: Accepted or closed already.
            WebSocketDisconnect: 1006: the ``101`` could not be written (the client left).
        """
        await self._conn.accept(subprotocol, headers)

    # --- receiving ------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next message, ``str`` or ``bytes``.

        Raises:
            WebSocketDisconnect: Closed (after the messages that came before the close).
        """
        return await self._conn.receive()

    async def receive_text(self) -> str:
        """The next message, which must be text; a binary one closes with 1003.

        Raises:
            WebSocketDisconnect: Closed, or 1003 for a binary message.
        """
        message = await self._conn.receive()
        if not isinstance(message, str):
            await self._unsupported("expected a text message")
        return message

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary; a text one closes with 1003.

        Raises:
            WebSocketDisconnect: Closed, or 1003 for a text message.
        """
        message = await self._conn.receive()
        if not isinstance(message, bytes):
            await self._unsupported("expected a binary message")
        return message

    async def receive_json(self) -> Any:
        """The next message (text or binary) parsed as JSON; invalid JSON closes with 1007.

        Raises:
            WebSocketDisconnect: Closed, or 1007 for a message that is not JSON.
        """
        message = await self._conn.receive()
        try:
            return orjson.loads(message)
        except orjson.JSONDecodeError:
            await self.close(1007, "invalid JSON")
            raise WebSocketDisconnect(1007, "invalid JSON") from None

    async def _unsupported(self, reason: str) -> NoReturn:
        await self.close(1003, reason)
        raise WebSocketDisconnect(1003, reason)

    def __aiter__(self) -> WebSocket:
        """``async for message in ws``: each message until the WebSocket closes.

        The WebSocket is its own iterator rather than an async generator: an idle
        WebSocket waiting in ``async for`` then holds one coroutine, not a generator, its
        ``asend`` object and an entry in the event loop's weak set of async generators
        (~0.4 KB each, measured with tracemalloc over 2 000 idle WebSockets).
        """
        return self

    async def __anext__(self) -> Message:
        """The next message; ``StopAsyncIteration`` once the WebSocket has closed."""
        try:
            return await self._conn.receive()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None

    # --- sending --------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send ``message``: ``str`` as text, ``bytes`` as binary.

        Waits while the client is behind by more than ``WS_SEND_BUFFER_SIZE`` bytes; a
        client that reads nothing for ``SEND_TIMEOUT`` is cut.

        Raises:
            WebSocketDisconnect: Closing or closed.
        """
        await self._conn.send(message)

    async def send_text(self, text: str) -> None:
        """Send a text message.

        Raises:
            WebSocketDisconnect: Closing or closed.
        """
        await self._conn.send(str(text))

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message.

        Raises:
            WebSocketDisconnect: Closing or closed.
        """
        await self._conn.send(bytes(data))

    async def send_json(self, value: Any, *, binary: bool = False) -> None:
        """Send ``value`` as JSON (orjson), in a text message, or binary with ``binary``.

        Raises:
            WebSocketDisconnect: Closing or closed.
            TypeError: ``value`` cannot be serialised.
        """
        data = orjson.dumps(value)
        await self._conn.send(data if binary else data.decode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket, or refuse it before :meth:`accept`.

        Before :meth:`accept`: the handshake is refused with 403. After: the closing
        handshake starts with ``code`` and ``reason`` (RFC 6455 §7.4). Closing again does
        nothing.
        """
        conn = self._conn
        if not conn.decision.done():
            conn.refuse(Response(403, "WebSocket refused\n"))
            return
        await conn.close(code, reason)

    def __repr__(self) -> str:
        state = "open" if self.is_open else f"closed {self.close_code}"
        return f"<WebSocket {self.path} {state}>"


class WebSocketEndpoint:
    """The HTTP handler of a websocket route (``async (Request) -> Response``).

    Answers what is not a valid handshake itself: 426 for a plain GET or another
    ``Sec-WebSocket-Version``, 400 for a malformed handshake, 403 for an ``Origin`` not
    allowed (``WS_ALLOWED_ORIGINS``); each is logged at info with its reason. A valid one
    runs ``handler(ws)`` in a task and returns what it decides: the ``101`` (the handler
    called ``accept``), 403 (it closed first), or the error it raised. The decision is
    bounded by the request's deadline (``REQUEST_TIMEOUT``), whose end cancels the task.

    Attributes:
        handler: The app's ``async (ws) -> None``.
        settings: The limits, set from the runtime's configuration when it starts.
    """

    __slots__ = ("_connection", "handler", "settings")

    def __init__(self, handler: WebSocketHandler) -> None:
        # The framing (and websockets) is loaded by the first websocket route, not by
        # ``import nessen``: a server without WebSockets does not carry it.
        from nessen.websocket.connection import WebSocketConnection

        self._connection = WebSocketConnection
        self.handler = handler
        self.settings = WebSocketSettings()

    async def __call__(self, request: Request) -> Response:
        """Check the handshake, run the handler, and return the HTTP answer it decided."""
        hosted = HOSTED_WEBSOCKET.get()
        if hosted is not None:  # another ASGI server holds the connection; it checked it
            offer = hosted.offer
        else:
            try:
                offer = read_offer(request)
            except HandshakeError as exc:
                log_refusal(request, exc.reason, str(exc))
                return exc.response
        settings = self.settings
        if not origin_allowed(offer.origin, request.host, request.scheme, settings.allowed_origins):
            log_refusal(request, "origin_not_allowed", f"Origin {offer.origin!r} is not allowed")
            return Response(403, "WebSocket Origin not allowed\n")
        conn: Channel
        if hosted is not None:
            conn = hosted
        else:
            conn = self._connection(request, offer, settings)
            watch_switch(request, conn)
        task = conn.run(self.handler, WebSocket(conn))
        try:
            return await conn.decision
        except asyncio.CancelledError:
            task.cancel()
            raise


def watch_switch(request: Request, conn: WebSocketConnection) -> None:
    """Tell ``conn`` when the upgrade request ends without its ``101`` being written."""
    previous = request.on_finished

    def finished(req: Request, response: Any, status: int, *rest: Any) -> None:
        # Called once: let go of this closure (it holds the connection), as the request
        # lives on with the WebSocket.
        req.on_finished = None
        if status != 101:
            conn.abandon()
        if previous is not None:
            previous(req, response, status, *rest)

    request.on_finished = finished


def log_refusal(request: Request, reason: str, detail: str) -> None:
    """Log, at info, a WebSocket handshake the server refused, with its reason."""
    logger.info(
        "WebSocket handshake refused: %s",
        detail,
        extra={"request_id": request.id, "path": request.path, "reason": reason},
    )
