"""Serve any ASGI 3 application on Nessen's server: ``nessen serve module:app``.

:class:`ASGIHost` holds a :class:`~nessen.runtime.Runtime` whose server hands every
request that is not a probe to the ASGI application (:class:`ASGIHandler`, given to
:meth:`Runtime.delegate <nessen.runtime.Runtime.delegate>`, with ``stream_bodies``), so
what a Runtime does around its handler applies unchanged: every connection-level limit
and deadline of the server, the drain, ``max_concurrent_requests``, the request deadline,
the request statistics and Prometheus metrics, and (optionally) ``/health``, ``/ready``,
``/api/health`` and ``/metrics`` answered in front of the app; the request id and the
access log are written by the handler. The server runs in streaming mode for it (see
:mod:`nessen.server.body`): request content reaches the app as it arrives, as several
``http.request`` events, never buffered whole, and the response goes out while the app
may still run.

The HTTP part follows the ASGI HTTP & WebSocket spec 2.3 (``scope["asgi"]["spec_version"]``)
and the lifespan part the lifespan spec 2.0 (startup and shutdown, with ``state``).
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from nessen.app import App, State
from nessen.app.application import Hook
from nessen.app.lifecycle import Lifecycle
from nessen.asgi.lifespan import Lifespan
from nessen.asgi.types import ASGI_VERSION, ASGIApp, Message, Scope
from nessen.config import Config
from nessen.http import Request, Response
from nessen.http.request import FinishedHook
from nessen.middleware.access_log import access_recorder
from nessen.middleware.request_id import valid_request_id
from nessen.observability.health import HEALTH_PATHS, METRICS_PATH
from nessen.observability.logs import current_request_id
from nessen.observability.status import STATUS_PATH, status_paths
from nessen.runtime import Runtime
from nessen.server import DrainResult, Server
from nessen.server.body import ClientDisconnected, RequestChannel
from nessen.server.h1.framing import (
    ASKS_CLOSE,
    FIELD_NAME_BYTES,
    OWN_DATE,
    OWN_SERVER,
    SERVER_FIELD_NAMES,
    PreparedResponse,
)
from nessen.server.supervisor import WorkerLink
from nessen.websocket import WebSocketSettings
from nessen.websocket.handshake import is_websocket_request

logger = logging.getLogger("nessen.asgi")

ASGI_MIDDLEWARE: Mapping[str, Any] = {
    "security_headers": False,
    "rate_limit": False,
    "compression": False,
}
"""The built-ins in front of the probe endpoints of an ASGI host: request id and access log
(the app's own requests get the same two from :class:`ASGIHandler`). Security headers,
rate limiting and compression would change what the app answers: they are the app's choice."""


_SERVER_OWNED = SERVER_FIELD_NAMES | {b"x-request-id"}
"""Response fields the server looks at before sending an ASGI app's: its framing and
connection fields (Content-Length is checked and kept aside; ``Connection: close`` closes
the connection after the response; the rest are dropped), ``Date`` and ``Server`` (the
app's replace the server's), and ``X-Request-ID`` (the app's is sent instead of the
request's id, e.g. an upstream one it propagates)."""
_valid_names: set[bytes] = set()
_NOTED_FIELDS = frozenset({b"host", b"upgrade", b"x-request-id"})
"""Request fields looked at while the scope is built: Host (the forwarded one replaces it
behind a trusted proxy), Upgrade (only a request with one is checked for a WebSocket
handshake) and X-Request-ID (an incoming id is reused when valid)."""
_own_id_noted = False


def _note_own_request_id() -> None:
    """Log once, at debug, that an app's X-Request-ID is sent instead of the request's."""
    global _own_id_noted
    if not _own_id_noted:
        _own_id_noted = True
        logger.debug("an ASGI app's X-Request-ID replaces the request's id (logged once)")


_Converted = tuple[str, int, int | None, bool]
"""An app's header list, converted: ``(field lines, claims, declared Content-Length, whether
it holds its own X-Request-ID)``; see :func:`_convert_fields`."""
_converted: dict[tuple[Any, ...], _Converted] = {}
_MAX_CACHED_LISTS = 256
_MAX_CACHED_FIELDS = 2048
"""Cached are at most this many header lists, each up to this many characters of fields."""


def _convert_fields(raw: tuple[Any, ...]) -> _Converted:
    """Check and serialise an app's response header pairs (see ``_Exchange._convert``).

    Raises:
        RuntimeError: As ``_Exchange._convert``.
    """
    parts: list[bytes] = []
    count = 0
    claims = 0
    declared: int | None = None
    own_id = False
    try:
        for name, value in raw:
            lower = name.lower()
            if lower in _SERVER_OWNED:
                if lower == b"content-length":
                    text = bytes(value).strip()
                    if not text.isdigit():
                        raise RuntimeError(f"ASGI app sent Content-Length {text[:32]!r}")
                    declared = int(text)
                    continue
                if lower == b"server":
                    claims |= OWN_SERVER
                elif lower == b"date":
                    claims |= OWN_DATE
                elif lower == b"x-request-id":
                    own_id = True
                else:
                    if lower == b"connection" and b"close" in bytes(value).lower():
                        claims |= ASKS_CLOSE
                    continue
            if lower not in _valid_names:
                if not FIELD_NAME_BYTES.fullmatch(name):
                    raise RuntimeError(f"ASGI app sent header name {name[:64]!r}")
                if len(_valid_names) < 4096:
                    _valid_names.add(lower)
            parts += (name, b": ", value, b"\r\n")
            count += 1
    except (AttributeError, TypeError, ValueError) as exc:
        raise RuntimeError(f"ASGI app sent malformed headers: {exc}") from exc
    block = b"".join(parts)
    if block.count(b"\n") != count or block.count(b"\r") != count or b"\0" in block:
        raise RuntimeError("ASGI app sent a header value holding CR, LF or NUL")
    return block.decode("latin-1"), claims, declared, own_id


class ASGIHandler:
    """The handler (``async (Request) -> Response | None``) that runs an ASGI 3 app.

    It needs the server's streaming mode (``Server(..., stream_bodies=True)``): each
    request is a :class:`~nessen.server.body.StreamedRequest`, whose channel carries the
    content in and the response out. The app runs inline, in the request's own task (one
    task per request, as in uvicorn), with an HTTP scope built from the request. The
    response is handed to the server through the channel as soon as it can go, while the
    app may keep running (Starlette's background tasks run after the response):

    - ``http.response.start``, then ``http.response.body`` with ``more_body`` false: a
      buffered :class:`~nessen.http.Response`, Content-Length framed, written at once.
    - a first ``http.response.body`` with ``more_body`` true: a streamed response. Every
      later ``send`` returns once the server has taken the previous part, and the server
      waits for the client to read whenever the socket buffer is full, so a slow reader
      slows the app instead of growing memory. A ``Content-Length`` the app set is kept
      and enforced; without one, HTTP/1.1 gets chunked transfer coding.

    Errors: the app raising, or returning, before its response could go is a 500 built by
    ``error_response`` (which logs it with the request id); raising or returning after a
    streamed response began, before its end, aborts the connection (logged by the
    server), since the status line is gone. After the response, an exception is logged.

    Every response carries ``X-Request-ID`` (a valid incoming one is reused, as the
    request-id middleware does), ``current_request_id`` is set while the app runs, and
    one ``nessen.access`` record is written per request when ``access_log`` is on, once
    the server is done with the response (the access-log middleware's record, as the
    request's ``on_finished`` hook): what went out, and the ``outcome`` when not all of it did. An
    app that stops because its client went away (it got ``http.disconnect``) ends its
    request as ``client_disconnected``, not as an error.

    Args:
        app: The ASGI 3 application.
        state: The lifespan state; each request's ``scope["state"]`` is a shallow copy.
        root_path: ``scope["root_path"]``, the prefix the app is mounted under; it is put
            in front of ``scope["path"]`` too, as the spec says.
    """

    def __init__(self, app: ASGIApp, *, state: dict[str, Any], root_path: str = "") -> None:
        self.app = app
        self.state = state
        self.root_path = root_path
        self.server_address: tuple[str, int] | None = None
        """``scope["server"]``: the listening address, set by the host once bound."""
        self.max_response_bytes = 10 * 1024 * 1024
        self.websocket_settings = WebSocketSettings()
        """The WebSocket limits (``WS_*``), set from the host's settings."""
        self.error_response: Callable[[Request, BaseException], Response] = _plain_500
        """Builds (and logs) the 500 for an app that failed before its response."""
        self._log_access: FinishedHook | None = None
        """Writes a request's ``nessen.access`` record (the access-log middleware's own
        :func:`~nessen.middleware.access_log.access_recorder`), ``None`` for none."""

    def configure(
        self,
        config: Config,
        *,
        error_response: Callable[[Request, BaseException], Response],
        access_log: bool,
    ) -> None:
        """Take the settings the host knows once it starts serving."""
        self.max_response_bytes = config.max_response_bytes
        self.websocket_settings = WebSocketSettings.from_config(config)
        # Any route of an ASGI app may take WebSockets: load their machinery (and
        # websockets) now, not on the first upgrade. (A Runtime loads it only for its
        # websocket routes.)
        importlib.import_module("nessen.asgi.websocket")
        self.error_response = error_response
        self._log_access = access_recorder() if access_log else None

    async def __call__(self, request: Request) -> Response | None:
        """Run the app for ``request``.

        Returns:
            ``None`` once the response went through the request's channel, else the 500
            to send (the app failed before answering).

        Raises:
            TypeError: ``request`` was not built in streaming mode.
        """
        try:
            channel: RequestChannel = request.channel  # type: ignore[attr-defined]
        except AttributeError:
            raise TypeError(
                "ASGIHandler needs the server's streaming mode (stream_bodies=True)"
            ) from None
        forwarded_host: str | None = None
        if request._proxy is None:  # no proxy trusted: the peer, the connection's scheme
            client = request._client
            scheme = request._scheme
        else:  # behind a trusted proxy: the client's address, scheme and Host, as ctx sees them
            address, scheme, forwarded_host = request._resolve()
            peer = request._client  # (Request.client, without resolving twice)
            client = peer if peer is None or address == peer[0] else (address, 0)
        headers: list[tuple[bytes, bytes]] = []
        incoming = None
        upgrade = host = False
        for name, value in request._raw_headers:
            name = name.lower()
            if name in _NOTED_FIELDS:
                if name == b"host":
                    host = True
                    if forwarded_host is not None:
                        value = forwarded_host.encode("latin-1")
                elif name == b"upgrade":
                    upgrade = True
                else:  # x-request-id; repeated: joined with ", ", so never valid
                    incoming = value if incoming is None else incoming + b", " + value
            headers.append((name, value))
        if incoming is not None:
            text = incoming.decode("latin-1")
            if valid_request_id(text):
                request._id = text
        if forwarded_host is not None and not host:  # HTTP/1.0
            headers.append((b"host", forwarded_host.encode("latin-1")))
        target = request._target
        path = request._path
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request._version,
            "server": self.server_address,
            "client": client,
            "scheme": scheme,
            "method": request._method,
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": target.partition(b"?")[0] if target[:1] == b"/" else path.encode(),
            "query_string": request._query_string,
            "headers": headers,
            "state": self.state.copy(),
        }
        if self._log_access is not None:
            request.on_finished = self._log_access
        if upgrade and request._method == "GET" and is_websocket_request(request):
            return await self._websocket(request, scope)
        exchange = _Exchange(self, request, channel, scope)
        token = current_request_id.set(request.id)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception as exc:
            return exchange.failed(exc)
        finally:
            current_request_id.reset(token)
        return exchange.returned()

    async def _websocket(self, request: Request, scope: dict[str, Any]) -> Response:
        """Serve a WebSocket upgrade (see :mod:`nessen.asgi.websocket`)."""
        from nessen.asgi.websocket import serve_websocket

        token = current_request_id.set(request.id)
        try:
            return await serve_websocket(self.app, request, scope, self.websocket_settings)
        except Exception as exc:
            return self.error_response(request, exc)
        finally:
            current_request_id.reset(token)


def _plain_500(request: Request, exc: BaseException) -> Response:
    logger.error("ASGI app failed", exc_info=(type(exc), exc, exc.__traceback__))
    return Response.json({"error": "Internal Server Error", "request_id": request.id}, 500)


class _Exchange:
    """One request's ``receive`` and ``send``, and the response they build."""

    __slots__ = (
        "_body_read",
        "_channel",
        "_claims",
        "_client_gone",
        "_complete",
        "_declared",
        "_fields",
        "_handler",
        "_request",
        "_responded",
        "_scope",
        "_started",
        "_status",
        "_stream",
    )

    def __init__(
        self, handler: ASGIHandler, request: Request, channel: RequestChannel, scope: Scope
    ) -> None:
        self._handler = handler
        self._request = request
        self._channel = channel
        self._scope = scope
        self._body_read = False
        self._client_gone = False  # receive() said so before the content was whole
        self._started = False
        self._responded = False
        self._complete = False
        self._status = 0
        self._fields = ""
        self._claims = 0
        self._declared: int | None = None
        self._stream: _ResponseStream | None = None

    # --- receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next event: ``http.request`` parts, then ``http.disconnect``.

        ``http.disconnect`` comes when the client has gone, or once the response is
        complete (and for every call after either).
        """
        channel = self._channel
        if not self._body_read:
            try:
                # What has arrived, without a coroutine when there is no need to wait
                # (the whole content of a small request arrives with its head).
                ready = channel.read_ready()
                data, more = ready if ready is not None else await channel.read()
            except ClientDisconnected:
                self._body_read = self._client_gone = True
                return {"type": "http.disconnect"}
            if not more:
                self._body_read = True
            return {"type": "http.request", "body": data, "more_body": more}
        await channel.wait_closed()
        return {"type": "http.disconnect"}

    # --- send ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Take ``http.response.start`` or ``http.response.body`` from the app.

        Raises:
            RuntimeError: A message out of order or of an unknown type, a bad status or
                header list.
        """
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("ASGI app sent 'http.response.start' twice")
            status = message["status"]
            if type(status) is not int:
                raise RuntimeError(f"ASGI app sent status {status!r}, not an int")
            self._started = True
            self._status = status
            self._fields = self._convert(message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"ASGI app sent an unexpected message type {kind!r}")
        if not self._started:
            raise RuntimeError("ASGI app sent 'http.response.body' before 'http.response.start'")
        stream = self._stream
        if self._complete:
            if stream is not None and stream.closed:
                return  # the client is gone: a no-op (spec 2.3)
            raise RuntimeError("ASGI app sent 'http.response.body' after the response ended")
        body = message.get("body", b"")
        if message.get("more_body", False):
            if stream is not None:
                await stream.push(body, True)
            else:
                await self._start_stream(body)
            return
        self._complete = True
        if stream is not None:
            await stream.push(body, False)
        else:  # the common case: the whole response in one message
            self._respond_whole(body if type(body) is bytes else bytes(body))

    def _convert(self, raw: Any) -> str:
        """Serialise the app's header pairs as the response's field lines.

        Content-Length is kept aside (the server frames the message); ``Server`` and
        ``Date`` are sent instead of the server's and ``Connection: close`` closes the
        connection after the response (:attr:`_claims`); the other framing and connection
        fields are dropped (as for any handler); ``X-Request-ID`` is the request's id unless
        the app set its own.

        A header list equal to one converted before (most responses of a route send the
        same fields) is looked up in a small cache rather than checked and joined again.

        Raises:
            RuntimeError: Not a list of byte pairs, a name that is not a token, a value
                holding CR, LF or NUL (RFC 9110 §5), or a Content-Length that is not a
                decimal number.
        """
        try:
            pairs = tuple(raw)
        except (AttributeError, TypeError, ValueError) as exc:
            raise RuntimeError(f"ASGI app sent malformed headers: {exc}") from exc
        try:
            converted = _converted.get(pairs)
            cacheable = True
        except (TypeError, ValueError):  # unhashable pairs (lists, bytearrays): not cached
            converted = None
            cacheable = False
        if converted is None:
            converted = _convert_fields(pairs)
            if cacheable and len(converted[0]) <= _MAX_CACHED_FIELDS:
                if len(_converted) >= _MAX_CACHED_LISTS:
                    _converted.clear()  # many distinct lists (cookies, etags): start over
                _converted[pairs] = converted
        fields, self._claims, self._declared, own_id = converted
        if own_id:
            _note_own_request_id()
            return fields
        request = self._request
        return f"{fields}X-Request-ID: {request._id or request.id}\r\n"

    def _hand_over(self, response: Response) -> bool:
        """Give the response to the server; note its route for the metrics and the log."""
        route = self._scope.get("route")
        if route is not None:
            template = getattr(route, "path", None)
            self._request.route = template if isinstance(template, str) else None
        self._responded = True
        return self._channel.respond(response)

    def _respond_whole(self, body: bytes) -> None:
        """The whole response is known: hand it over in one piece."""
        declared = self._declared
        size = len(body)
        response = PreparedResponse(self._status, body, fields=self._fields, claims=self._claims)
        if (declared is not None and declared != size and self._request._method == "HEAD") or (
            size > self._handler.max_response_bytes
        ):
            # A HEAD answer announcing the GET's length, or a body past max_response_bytes
            # (it is in memory already: sent with flow control rather than refused).
            head = self._request._method == "HEAD"
            response.content_length = size if declared is None else declared
            response.stream = () if head else (body,)
        self._hand_over(response)

    async def _start_stream(self, first: bytes) -> None:
        stream = self._stream = _ResponseStream()
        response = PreparedResponse(
            self._status, fields=self._fields, content_length=self._declared, claims=self._claims
        )
        response.stream = stream
        if not self._hand_over(response):
            stream.closed = True  # already answered (deadline, refused content): drop it
            return
        await stream.push(first, True)

    # --- the app's end ---------------------------------------------------------------------

    def _server_error(self, exc: BaseException) -> Response:
        """The 500 for an app that never answered, with the request id echoed as usual."""
        request = self._request
        response = self._handler.error_response(request, exc)
        if not response.has_field("x-request-id"):  # a valid id is visible ASCII
            response.add_encoded_fields(f"X-Request-ID: {request.id}\r\n", ("x-request-id",))
        return response

    def failed(self, exc: Exception) -> Response | None:
        """The app raised: a 500 if nothing was sent, else end what was begun.

        When the app had been told that its content would not come whole (``receive``
        gave ``http.disconnect`` before the end: its client went away, or its content was
        refused and answered), the exception is the app's reaction to that (Starlette's
        ``ClientDisconnect`` from ``request.body()``, a 500 sent into the void): logged at
        info without a traceback, and the request ends as for an app that stopped on
        ``http.disconnect``.

        Raises:
            ClientDisconnected: As :meth:`returned`.
        """
        stream = self._stream
        if self._client_gone:
            request = self._request
            logger.info(
                "ASGI app raised %s: %s, after its request was over (client gone or content "
                "refused)",
                type(exc).__name__,
                exc,
                extra={"request_id": request.id, "method": request.method, "path": request.path},
            )
            if stream is not None and not stream.ended:
                stream.fail(ClientDisconnected("the app stopped: its client went away"))
            elif not self._responded:
                raise ClientDisconnected("the app stopped: its client went away") from exc
            return None
        if not self._responded:
            return self._server_error(exc)
        stream = self._stream
        if stream is not None and not stream.ended:
            stream.fail(exc)  # the server logs it and aborts the connection
            return None
        request = self._request
        logger.error(
            "ASGI app raised after its response: %s %s",
            request.method,
            request.path,
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"request_id": request.id, "method": request.method, "path": request.path},
        )
        return None

    def returned(self) -> Response | None:
        """The app returned: a 500 if it never answered, else end what was begun.

        Raises:
            ClientDisconnected: The request was over for the server (its client went away,
                or its content was refused) before the app answered it whole: an app that
                stops on ``http.disconnect`` is not an error.
        """
        if self._channel.closed:
            stream = self._stream
            if not self._responded:
                raise ClientDisconnected("the app stopped: its client went away")
            if stream is not None and not stream.ended:
                stream.fail(ClientDisconnected("the app stopped: its client went away"))
            return None
        if not self._responded:
            if not self._started:
                problem = "ASGI app returned without sending 'http.response.start'"
            else:
                problem = "ASGI app returned without sending its response body"
            return self._server_error(RuntimeError(problem))
        stream = self._stream
        if stream is not None and not stream.ended:
            stream.fail(RuntimeError("ASGI app returned without completing its response body"))
        return None


class _ResponseStream:
    """A streamed response body: the app's ``send`` pushes, the server iterates.

    A push with more to come waits until the server has taken it (one part in flight),
    which is how write flow control reaches the app. The server counts what it sends.
    """

    __slots__ = ("_consumer", "_done", "_error", "_parts", "_producer", "closed")

    def __init__(self) -> None:
        self._parts: collections.deque[bytes] = collections.deque()
        self._done = False
        self._error: BaseException | None = None
        self._consumer: asyncio.Future[None] | None = None
        self._producer: asyncio.Future[None] | None = None
        self.closed = False
        """The server stopped reading (response written, or the connection lost)."""

    @property
    def ended(self) -> bool:
        """The app sent its last part, or the stream failed or was closed."""
        return self._done or self._error is not None or self.closed

    def __aiter__(self) -> _ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            parts = self._parts
            if parts:
                part = parts.popleft()
                if not parts:
                    _wake(self._producer)
                return part
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._done:
                raise StopAsyncIteration
            waiter = self._consumer = asyncio.get_running_loop().create_future()
            await waiter

    async def aclose(self) -> None:
        """The server is done with the stream: wake a waiting ``send``, drop the rest."""
        if self.closed:
            return
        self.closed = True
        self._parts.clear()
        _wake(self._producer)
        _wake(self._consumer)

    async def push(self, data: bytes, more: bool) -> None:
        """Queue ``data``; when ``more``, wait until the server has taken it."""
        if self.closed:
            return  # the client is gone: a no-op, as spec 2.3 says
        if data:
            self._parts.append(bytes(data))
        if not more:
            self._done = True
        _wake(self._consumer)
        while more and self._parts and not self.closed:
            waiter = self._producer = asyncio.get_running_loop().create_future()
            await waiter

    def fail(self, exc: BaseException) -> None:
        """End the stream with ``exc`` (raised in the server, which aborts the connection)."""
        self._error = exc
        _wake(self._consumer)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class ASGIHost:
    """A Runtime serving an ASGI 3 application: what ``nessen serve module:app`` builds.

    It holds a :class:`~nessen.runtime.Runtime` (:attr:`runtime`) in streaming mode that
    :meth:`delegates <nessen.runtime.Runtime.delegate>` every request it does not answer
    itself to :attr:`handler`. With ``health_endpoints``, ``/health``, ``/ready``,
    ``/api/health`` and ``/metrics`` are answered in front of the app by the Runtime's own
    router and built-in middleware (and Prometheus metrics recorded); without, every path
    is the app's. App requests skip the router and the middleware chain:
    :class:`ASGIHandler` sets the request id and writes the access record itself. Lifespan
    startup runs before the socket accepts (a failure exits 3, as a failing startup hook
    does); lifespan shutdown runs after the drain, which waits for the app's requests,
    background work included. With an admin listener (``ADMIN_PORT``), ``/api/health`` and
    ``/metrics`` are answered there, and on the main port they are the app's paths.

    The metric and access-log ``route`` of a request is the app's route template when the
    app puts one in ``scope["route"]`` (Starlette and FastAPI do), else unmatched.

    Serving (:meth:`start`, :meth:`serve`, :meth:`listen`, :meth:`stop`) is the Runtime's;
    this object forwards them, so it goes wherever a Runtime is served
    (:class:`~nessen.runtime.Servable`).

    Args:
        app: The ASGI 3 application.
        config: Settings; ``Config.from_env()`` when ``None``.
        health_endpoints: Serve the probe and metrics endpoints in front of the app.
        access_log: One ``nessen.access`` line per request.
        root_path: ``scope["root_path"]``.
        lifespan: ``"auto"``, ``"on"`` or ``"off"`` (see :class:`Lifespan`).

    Raises:
        ValueError: Another ``lifespan`` mode.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: Config | None = None,
        *,
        health_endpoints: bool = False,
        access_log: bool = True,
        root_path: str = "",
        lifespan: str = "auto",
    ) -> None:
        runtime = self.runtime = Runtime(
            config,
            health_endpoints=health_endpoints,
            middleware=ASGI_MIDDLEWARE,
            access_log=access_log,
            metrics=health_endpoints,
            status_page=None if health_endpoints else False,  # None: not in production
            stream_bodies=True,
        )
        """The Runtime that serves: its server, lifecycle, probes, metrics and statistics."""
        self.asgi_app = app
        self.lifespan_state: dict[str, Any] = {}
        """``scope["state"]`` of the lifespan; each request's scope gets a shallow copy."""
        self.lifespan = Lifespan(app, self.lifespan_state, lifespan)
        self.handler = ASGIHandler(app, state=self.lifespan_state, root_path=root_path)
        # Probes go through the Runtime's router and built-in middleware, everything else
        # straight to the app (no router, no middleware chain: the app runs inline in the
        # request's task and answers through its channel).
        native = (
            HEALTH_PATHS | {METRICS_PATH} | set(status_paths(STATUS_PATH))
            if health_endpoints
            else frozenset()
        )
        runtime.delegate(self.handler, native_paths=native)
        runtime.on_startup(self._startup)
        runtime.on_shutdown(self._shutdown)
        runtime.lifecycle.on_change(self._state_changed)

    async def _startup(self) -> None:
        runtime = self.runtime
        self.handler.configure(
            runtime.config, error_response=runtime.app.error_response, access_log=runtime.access_log
        )
        await self.lifespan.startup()

    async def _shutdown(self) -> None:
        # The drain has waited for the app's requests, background work included (the app
        # runs in each request's task, which counts as active until the app returns).
        await self.lifespan.shutdown()

    def _state_changed(self, old: State, new: State) -> None:
        server = self.runtime.server
        if new is State.READY and server is not None:  # listening: scope["server"] is known
            self.handler.server_address = server.address

    # --- what the Runtime does, forwarded ----------------------------------------------------

    @property
    def app(self) -> App:
        """The Runtime's :class:`~nessen.app.App` (its router, middleware and hooks)."""
        return self.runtime.app

    @property
    def config(self) -> Config:
        """The settings (see :attr:`Runtime.config <nessen.runtime.Runtime.config>`)."""
        return self.runtime.config

    @property
    def has_config(self) -> bool:
        """Whether settings were given or have been read already."""
        return self.runtime.has_config

    def configure(self, config: Config) -> None:
        """Replace the settings before serving.

        Raises:
            RuntimeError: Already serving.
        """
        self.runtime.configure(config)

    @property
    def state(self) -> State:
        """The lifecycle state."""
        return self.runtime.state

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle state machine."""
        return self.runtime.lifecycle

    @property
    def server(self) -> Server | None:
        """The running server, if any."""
        return self.runtime.server

    @property
    def admin_server(self) -> Server | None:
        """The admin listener's server (``ADMIN_PORT``) while serving, else ``None``."""
        return self.runtime.admin_server

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``hook`` before the socket accepts, after lifespan startup; raising exits 3."""
        return self.runtime.on_startup(hook)

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook`` after the drain and lifespan shutdown."""
        return self.runtime.on_shutdown(hook)

    async def start(
        self, sock: Any = None, link: WorkerLink | None = None, admin_sock: Any = None
    ) -> Server:
        """Run lifespan startup (and any startup hook), bind, accept: see Runtime.start.

        Raises:
            StartupError: Lifespan startup failed, or the address could not be bound.
        """
        return await self.runtime.start(sock, link, admin_sock)

    async def stop(self, grace_period: float | None = None) -> DrainResult:
        """Drain, run lifespan shutdown, close: see Runtime.stop.

        Returns:
            What the drain had to cut.
        """
        return await self.runtime.stop(grace_period)

    async def serve(
        self,
        *,
        sock: Any = None,
        handle_signals: bool = True,
        link: WorkerLink | None = None,
        admin_sock: Any = None,
    ) -> int:
        """Serve until SIGTERM/SIGINT, then drain: see Runtime.serve.

        Returns:
            The process exit status (0, 1 or 3).
        """
        return await self.runtime.serve(
            sock=sock, handle_signals=handle_signals, link=link, admin_sock=admin_sock
        )

    def request_stop(self) -> None:
        """Ask a running :meth:`serve` to drain and return (call on its loop)."""
        self.runtime.request_stop()

    def listen(self, port: int | None = None, host: str | None = None) -> int:
        """Serve in this thread until SIGTERM/SIGINT; blocking: see Runtime.listen.

        Returns:
            The exit status.
        """
        return self.runtime.listen(port, host)
