"""The ASGI ``websocket`` scope for apps hosted by ``nessen serve`` (ASGI spec 2.3+).

:func:`serve_websocket` runs an ASGI app for a WebSocket upgrade request the server
parsed: it checks the handshake and the ``Origin`` first (400, 426 or 403 without
calling the app), then gives the app a ``websocket`` scope and ``receive``/``send``
backed by a :class:`~nessen.websocket.connection.WebSocketConnection`:

- ``receive``: ``websocket.connect`` first, then ``websocket.receive`` (``text`` or
  ``bytes``) per message, then ``websocket.disconnect`` with the close code (and
  ``reason``) once the WebSocket is closed.
- ``send``: ``websocket.accept`` (``subprotocol``, ``headers``) writes the ``101``;
  ``websocket.close`` before it refuses with 403, after it starts the closing handshake;
  ``websocket.send`` sends a message (once closed it raises :class:`WebSocketClosed`, an
  ``OSError`` as the spec asks); ``websocket.http.response.start``/``.body`` (the
  denial-response extension) refuse the handshake with the app's own HTTP response.

Every limit of :mod:`nessen.websocket.connection` applies, as for a native route.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nessen.asgi.types import ASGI_VERSION, ASGIApp, Message, Receive, Scope, Send
from nessen.http import Request, Response, SwitchingProtocols
from nessen.server.body import ClientDisconnected
from nessen.websocket.api import log_refusal, watch_switch
from nessen.websocket.connection import WebSocketConnection, run_handler
from nessen.websocket.handshake import HandshakeError, Offer, origin_allowed, read_offer
from nessen.websocket.types import WebSocketDisconnect, WebSocketSettings


class WebSocketClosed(ClientDisconnected, OSError):
    """Raised by ``send`` on a WebSocket that is closed.

    An ``OSError``, as the ASGI spec (2.4) asks, so Starlette turns it into its own
    ``WebSocketDisconnect``.
    """


WEBSOCKET_EXTENSIONS: dict[str, dict[str, Any]] = {"websocket.http.response": {}}
"""``scope["extensions"]``: the denial response is supported."""


async def serve_websocket(
    app: ASGIApp,
    request: Request,
    scope: dict[str, Any],
    settings: WebSocketSettings,
) -> Response:
    """Run ``app`` for the WebSocket upgrade ``request``; return the HTTP answer.

    Args:
        app: The ASGI application.
        request: The upgrade request (``Connection: upgrade``, ``Upgrade: websocket``).
        scope: The HTTP scope built for it; turned into a ``websocket`` scope here.
        settings: The WebSocket limits (``WS_*``).

    Returns:
        The ``101`` once the app accepted, or the refusal: the handshake's 400/426, 403
        for an ``Origin`` not allowed or an app that closed first, the app's denial
        response.

    Raises:
        Exception: What the app raised before deciding (the caller answers 500).
    """
    try:
        offer = read_offer(request)
    except HandshakeError as exc:
        log_refusal(request, exc.reason, str(exc))
        return exc.response
    if not origin_allowed(offer.origin, request.host, request.scheme, settings.allowed_origins):
        log_refusal(request, "origin_not_allowed", f"Origin {offer.origin!r} is not allowed")
        return Response(403, "WebSocket Origin not allowed\n")
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    scope["asgi"] = ASGI_VERSION
    scope["subprotocols"] = list(offer.subprotocols)
    scope["extensions"] = WEBSOCKET_EXTENSIONS
    del scope["method"]
    conn = WebSocketConnection(request, offer, settings)
    watch_switch(request, conn)
    session = _Session(conn)
    task = conn.run(app, scope, session.receive, session.send)
    try:
        return await conn.decision
    except asyncio.CancelledError:
        task.cancel()
        raise


class _Session:
    """One WebSocket's ASGI ``receive`` and ``send``."""

    __slots__ = ("_conn", "_connected", "_denial", "_denial_body")

    def __init__(self, conn: WebSocketConnection) -> None:
        self._conn = conn
        self._connected = False
        self._denial: Response | None = None
        self._denial_body: list[bytes] = []

    async def receive(self) -> Message:
        conn = self._conn
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        if not conn.decision.done():
            await asyncio.wait([conn.decision])  # the app reads before deciding: wait
        try:
            message = await conn.receive()
        except WebSocketDisconnect as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        conn = self._conn
        if kind == "websocket.send":
            text = message.get("text")
            data = text if text is not None else message.get("bytes")
            if data is None:
                raise TypeError("websocket.send needs 'text' or 'bytes'")
            try:
                await conn.send(data)
            except WebSocketDisconnect as exc:
                raise WebSocketClosed(f"the WebSocket is closed ({exc.code})") from None
        elif kind == "websocket.accept":
            fields = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers") or ()
            ]
            fields.append(("X-Request-ID", conn.request.id))
            await conn.accept(message.get("subprotocol"), fields)
        elif kind == "websocket.close":
            if not conn.decision.done():
                conn.refuse(Response(403, "WebSocket refused\n"))
            else:
                await conn.close(message.get("code", 1000), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if conn.decision.done() or self._denial is not None:
                raise RuntimeError(f"{kind} after the handshake was decided")
            headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers") or ()
            ]
            self._denial = Response(int(message["status"]), headers=headers)
        elif kind == "websocket.http.response.body":
            denial = self._denial
            if denial is None or conn.decision.done():
                raise RuntimeError(f"{kind} without websocket.http.response.start")
            self._denial_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                denial.body = b"".join(self._denial_body)
                conn.refuse(denial)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a websocket scope")


class HostedWebSocket:
    """A WebSocket that another ASGI server holds (uvicorn, hypercorn, granian...).

    For a :class:`~nessen.runtime.Runtime` served as an ASGI app.

    It stands in for :class:`~nessen.websocket.connection.WebSocketConnection` behind a
    websocket route's :class:`~nessen.websocket.WebSocket`: ``accept``, ``receive``,
    ``send`` and ``close`` become the host's ``websocket.*`` events. The frames, the
    limits and the pings are the host server's; the route, the middleware on the upgrade
    request, the ``Origin`` check and the handler's API are Nessen's.

    Args:
        request: The upgrade request built from the scope.
        scope: The host's ``websocket`` scope.
        receive: The host's ``receive``.
        send: The host's ``send``.
    """

    def __init__(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        self.request = request
        self.offer = Offer(
            "", tuple(scope.get("subprotocols") or ()), request.headers.get("origin")
        )
        self.denial = "websocket.http.response" in (scope.get("extensions") or {})
        self.loop = asyncio.get_running_loop()
        self.decision: asyncio.Future[Response] = self.loop.create_future()
        self.subprotocol: str | None = None
        self.handler_task: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._receive = receive
        self._send = send
        self._connected = False
        self._accepted = False

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent."""
        return self._accepted and self.close_code is None

    def ending_code(self) -> int:
        """The close code, or 1006 while none is known."""
        return self.close_code if self.close_code is not None else 1006

    async def _connect(self) -> None:
        if not self._connected:
            self._connected = True
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = int(message.get("code", 1006))
                raise WebSocketDisconnect(self.close_code)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Send ``websocket.accept`` (see :meth:`WebSocketConnection.accept`).

        Raises:
            ValueError: ``subprotocol`` was not offered.
            RuntimeError: Already accepted or refused.
            WebSocketDisconnect: The client left before.
        """
        if self.decision.done():
            raise RuntimeError("this WebSocket was already accepted or refused")
        if subprotocol is not None and subprotocol not in self.offer.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
        await self._connect()
        items = headers.items() if hasattr(headers, "items") else headers or ()
        fields = [(str(n).encode("latin-1"), str(v).encode("latin-1")) for n, v in items]
        fields.append((b"x-request-id", self.request.id.encode("latin-1")))
        await self._send(
            {"type": "websocket.accept", "subprotocol": subprotocol, "headers": fields}
        )
        self.subprotocol = subprotocol
        self._accepted = True
        self.decision.set_result(SwitchingProtocols(lambda: None, "websocket"))

    def refuse(self, response: Response) -> None:
        """Refuse the handshake with ``response`` (sent by :meth:`answer`)."""
        if self.decision.done():
            raise RuntimeError("this WebSocket was already accepted or refused")
        self.decision.set_result(response)

    async def answer(self, response: Response) -> None:
        """Send a refusal.

        The denial response where the host has the extension, else a ``websocket.close``
        (which hosts answer with 403).
        """
        if self._accepted:
            return
        await self._connect()
        if self.denial:
            fields = [
                (n.lower().encode("latin-1"), v.encode("latin-1"))
                for n, v in response.headers.multi_items()
            ]
            if response.content_type:
                fields.append((b"content-type", response.content_type.encode("latin-1")))
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": response.status,
                    "headers": fields,
                }
            )
            await self._send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await self._send({"type": "websocket.close", "code": 1008})

    async def receive(self) -> str | bytes:
        """The next message (see :meth:`WebSocketConnection.receive`).

        Raises:
            WebSocketDisconnect: Closed.
        """
        self._before_accept("receive")
        if self.close_code is not None or not self._accepted:
            raise WebSocketDisconnect(self.ending_code(), self.close_reason)
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        self.close_code = int(message.get("code", 1005))
        self.close_reason = message.get("reason") or ""
        raise WebSocketDisconnect(self.close_code, self.close_reason)

    async def send(self, message: str | bytes) -> None:
        """Send a message (see :meth:`WebSocketConnection.send`).

        Raises:
            WebSocketDisconnect: Closed.
        """
        self._before_accept("send")
        if not self.is_open:
            raise WebSocketDisconnect(self.ending_code(), self.close_reason)
        event: Message = {"type": "websocket.send"}
        event["text" if isinstance(message, str) else "bytes"] = message
        try:
            await self._send(event)
        except OSError:
            self.close_code = self.ending_code()
            raise WebSocketDisconnect(self.ending_code()) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send ``websocket.close`` once."""
        if self.is_open:
            self.close_code = code
            self.close_reason = reason
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def run(self, handler: Any, *args: Any) -> asyncio.Task[None]:
        """Run the route's handler in a task, as :meth:`WebSocketConnection.run` does."""
        task = self.loop.create_task(self._run(handler, args))
        self.handler_task = task
        return task

    async def _run(self, handler: Any, args: tuple[Any, ...]) -> None:
        await run_handler(self, handler, args)

    def fail_handshake(self, exc: BaseException) -> None:
        """The app failed before deciding: the HTTP side raises ``exc`` (an error answer)."""
        if not self.decision.done():
            self.decision.set_exception(exc)

    def _before_accept(self, verb: str) -> None:
        """Refuse a call made before the handshake was decided.

        Raises:
            RuntimeError: ``accept()`` comes first.
        """
        if not self.decision.done():
            raise RuntimeError(f"call accept() before {verb}() on a WebSocket")
