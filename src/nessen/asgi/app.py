"""A Runtime as an ASGI 3 application: ``uvicorn module:runtime`` (``Runtime.__call__``).

The host server (uvicorn, hypercorn, granian) then owns the sockets, the parser and the
connection-level limits and timeouts; the Runtime keeps what is about the request itself:
routing, middleware, health endpoints, metrics, the access log, ``max_body_bytes`` (413,
checked on the declared Content-Length and on the content as it arrives) and
``request_timeout`` (503 + Retry-After, the handler cancelled). Lifespan ``startup``
runs :meth:`Runtime.prepare` (what :meth:`Runtime.start` runs short of binding: the
built-in middleware, startup hooks, metrics) and :meth:`Runtime.begin_serving` (READY);
lifespan ``shutdown`` runs :meth:`Runtime.stop` (DRAINING, shutdown hooks, STOPPING). A
host that skips lifespan gets the middleware and metrics set up on the first request, and
the startup hooks are not run (logged as a warning). Only the Runtime's public seam is used.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from nessen.asgi.types import Message, Receive, Scope, Send
from nessen.errors import ProtocolError
from nessen.http import Request, Response
from nessen.http.forwarded import ProxyTrust
from nessen.http.request import (
    CLIENT_DISCONNECTED,
    REQUEST_TIMEOUT,
    RESPONSE_ERROR,
)
from nessen.http.target import split_target
from nessen.observability.logs import configure_logging
from nessen.runtime import Prepared, Runtime
from nessen.server import ServerEvents
from nessen.server.h1 import policy
from nessen.server.h1.framing import (
    FIELD_NAME_BYTES,
    NO_CONTENT_STATUSES,
    SERVER_FIELD_NAMES,
    ResponseError,
    carry_fields,
    error_body,
    field_value,
)
from nessen.server.state import proxy_trust, warn_if_trusting_every_peer
from nessen.websocket.api import HOSTED_WEBSOCKET

logger = logging.getLogger("nessen.asgi")


_adapters: weakref.WeakKeyDictionary[Runtime, RuntimeASGI] = weakref.WeakKeyDictionary()


async def runtime_asgi_app(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ASGI connection scope with ``runtime`` (what ``Runtime.__call__`` does).

    Args:
        runtime: The runtime.
        scope: ``type`` ``"http"``, ``"websocket"`` (the websocket routes, see
            :meth:`RuntimeASGI.websocket`) or ``"lifespan"``.
        receive: The host's ``receive``.
        send: The host's ``send``.

    Raises:
        RuntimeError: A scope type other than http, lifespan or websocket.
    """
    adapter = _adapters.get(runtime)
    if adapter is None:
        adapter = _adapters[runtime] = RuntimeASGI(runtime)
    kind = scope["type"]
    if kind == "http":
        await adapter.http(scope, receive, send)
    elif kind == "lifespan":
        await adapter.lifespan(receive, send)
    elif kind == "websocket":
        await adapter.websocket(scope, receive, send)
    else:
        raise RuntimeError(f"nessen Runtime cannot serve ASGI scope type {kind!r}")


class RuntimeASGI:
    """The ASGI side of one :class:`~nessen.runtime.Runtime` (created on its first call).

    Args:
        runtime: The runtime served.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.prepared: Prepared | None = None
        """The runtime's handler and outcome reports (statistics, metrics, rejection log),
        once set up (:meth:`Runtime.prepare`)."""
        self.proxy: ProxyTrust | None = None
        """``TRUST_PROXY`` applied to the host server's ``scope["client"]``, once set up."""
        self.dropped_content_logged: set[tuple[int, str]] = set()
        """(status, route) pairs whose dropped content was logged (policy.content_dropped)."""

    # --- lifespan --------------------------------------------------------------------------

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Answer ``lifespan.startup`` and ``lifespan.shutdown`` (ASGI lifespan spec 2.0)."""
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                try:
                    await self.runtime.stop()
                except Exception as exc:
                    logger.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self, *, run_hooks: bool = True) -> None:
        """Set the runtime up as :meth:`Runtime.start` does, without binding a socket.

        Raises:
            RuntimeError: The runtime is already serving.
            StartupError: A startup hook raised.
            ConfigError: The configuration (from the environment) is invalid.
        """
        await self._start(run_hooks)

    async def _start(self, run_hooks: bool) -> Prepared:
        runtime = self.runtime
        config = runtime.config
        if not logging.getLogger().handlers:
            # The host configured only its own loggers (uvicorn does): without this, Python's
            # last-resort handler would print warnings and errors unescaped, so a request
            # path holding %0a could forge a line. Set up Nessen's formatting as `serve` does.
            configure_logging(
                config.log_level,
                config.effective_log_format,
                buffer_bytes=config.log_buffer_bytes,
            )
        prepared = await runtime.prepare(run_hooks=run_hooks)
        self.proxy = proxy_trust(config)
        warn_if_trusting_every_peer(config)
        self.prepared = prepared
        runtime.begin_serving()
        logger.info("nessen %s serving as an ASGI application", runtime.version)
        return prepared

    # --- http ------------------------------------------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request scope."""
        prepared = self.prepared
        if prepared is None:
            prepared = await self._setup_lazily()
        events = prepared.events
        config = self.runtime.config
        started = time.monotonic()
        try:
            request = _request(scope, self.proxy)
        except ProtocolError as exc:
            await _send_error(send, exc, head=scope.get("method") == "HEAD")
            events.request_rejected(exc.reason, exc.status, str(exc), _client(scope), None)
            return
        # The content: whole, within max_body_bytes (413 on the declared or received size).
        limit = config.max_body_bytes
        declared = _content_length(request)
        if declared is not None and declared > limit:
            await self._refuse(
                events, request, send, policy.body_too_large(declared, limit, declared=True)
            )
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody to answer
                return
            data = message.get("body", b"")
            if data:
                size += len(data)
                if size > limit:
                    error = policy.body_too_large(size, limit, declared=False)
                    await self._refuse(events, request, send, error)
                    return
                parts.append(data)
            if not message.get("more_body", False):
                break
        if parts:
            request._body = parts[0] if len(parts) == 1 else b"".join(parts)
        # The handler, within request_timeout.
        try:
            async with asyncio.timeout(config.request_timeout) as deadline:
                response = await prepared.handler(request)
        except TimeoutError:
            if not deadline.expired():
                response = events.handler_error(
                    request, TimeoutError("handler raised TimeoutError")
                )
            else:
                detail = (
                    f"handler ran past {config.request_timeout:g} s (request_timeout); cancelled"
                )
                events.request_rejected("request_timeout", 503, detail, request.client, request)
                sent = await _send_error(
                    send,
                    ProtocolError(detail, status=503, reason="request_timeout"),
                    head=request.method == "HEAD",
                    retry_after=True,
                    request_id=request.id,
                )
                _finished(request, None, 503, sent, REQUEST_TIMEOUT, started)
                return
        except Exception as exc:
            response = events.handler_error(request, exc)
        await self._respond(request, response, send, receive, events, started)

    # --- websocket -------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ``websocket`` scope with the runtime's websocket routes.

        The upgrade request goes through the middleware and the router as on Nessen's own
        server, within ``request_timeout`` until the handler accepts or refuses; then the
        handler runs on the host's ``receive``/``send`` (see
        :class:`~nessen.asgi.websocket.HostedWebSocket`) until it returns. A refusal is
        sent as the denial response where the host supports it, else as a close.
        """
        prepared = self.prepared
        if prepared is None:
            prepared = await self._setup_lazily()
        events = prepared.events
        started = time.monotonic()
        http_scope = dict(scope)
        http_scope["method"] = "GET"
        http_scope["scheme"] = "https" if scope.get("scheme") == "wss" else "http"
        try:
            request = _request(http_scope, self.proxy)
        except ProtocolError as exc:
            events.request_rejected(exc.reason, exc.status, str(exc), _client(scope), None)
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        # Loaded here, not at import: a runtime with websocket routes has loaded the
        # framing already, and one without has no use for it.
        from nessen.asgi.websocket import HostedWebSocket

        hosted = HostedWebSocket(request, scope, receive, send)
        token = HOSTED_WEBSOCKET.set(hosted)
        try:
            async with asyncio.timeout(self.runtime.config.request_timeout):
                response = await prepared.handler(request)
        except Exception as exc:
            response = events.handler_error(request, exc)
        finally:
            HOSTED_WEBSOCKET.reset(token)
        task = hosted.handler_task
        if response.status == 101 and task is not None:
            events.request_finished(request, 101, 0, time.monotonic() - started)
            _finished(request, response, 101, 0, None, started)
            await asyncio.wait([task])
            return
        if task is not None and not task.done():
            task.cancel()
        await hosted.answer(response)
        events.request_finished(
            request, response.status, len(response.body), time.monotonic() - started
        )
        _finished(request, response, response.status, len(response.body), None, started)

    async def _setup_lazily(self) -> Prepared:
        if self.runtime.app.startup_hooks:
            logger.warning(
                "the ASGI server did not run the lifespan protocol: startup hooks not run"
            )
        return await self._start(run_hooks=False)

    async def _refuse(
        self, events: ServerEvents, request: Request, send: Send, error: ProtocolError
    ) -> None:
        """Log ``error`` as a rejection of ``request`` and send its answer."""
        events.request_rejected(error.reason, error.status, str(error), request.client, request)
        await _send_error(send, error, head=request.method == "HEAD")

    async def _respond(
        self,
        request: Request,
        response: Any,
        send: Send,
        receive: Receive,
        events: ServerEvents,
        started: float,
    ) -> None:
        """Send ``response`` as ``http.response.start`` and ``http.response.body`` events.

        What is reported (statistics, metrics, ``request.on_finished``) is what was passed
        to the host's ``send``. A streamed response stops when the host says the client
        went away: ``send`` raising ``OSError`` (ASGI spec 2.4 hosts), or ``receive``
        answering ``http.disconnect`` (spec 2.3 hosts such as uvicorn, whose ``send`` then
        does nothing), checked before each part.
        """
        config = self.runtime.config
        head = request.method == "HEAD"
        try:
            if type(response) is not Response:
                raise ResponseError(f"handler returned {type(response).__name__}, not Response")
            status = response.status
            size = 0 if response.stream is not None else len(response.body)
            policy.check_response(status, size, config.max_response_bytes)
            headers = _header_list(response)
        except ResponseError as exc:
            refused, response = response, events.handler_error(request, exc)
            carry_fields(refused, response)
            status = response.status
            headers = _header_list(response)
        if response.stream is None:
            body = response.body
            if status in NO_CONTENT_STATUSES:
                if body:
                    policy.content_dropped(request, status, len(body), self.dropped_content_logged)
                body = b""
                if status == 205:  # RFC 9110 §15.3.6; 204 and 304 have no framing field
                    headers.append((b"content-length", b"0"))
            else:
                headers.append((b"content-length", str(len(body)).encode()))
            outcome: str | None = None
            try:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"" if head else body,
                        "more_body": False,
                    }
                )
            except OSError:  # spec 2.4 hosts: the client went away
                outcome = CLIENT_DISCONNECTED
            sent = 0 if head or outcome is not None else len(body)
            events.request_finished(request, status, sent, time.monotonic() - started)
            _finished(request, response, status, sent, outcome, started)
            return
        declared = response.headers.get("content-length")
        if declared is not None and status not in NO_CONTENT_STATUSES:
            headers.append((b"content-length", declared.encode("latin-1")))
        elif status == 205:
            headers.append((b"content-length", b"0"))
        sent = 0
        source = response.stream
        outcome = None
        # The host's receive() answers http.disconnect once the client has gone (the
        # content was read whole before the handler ran, so nothing else is pending).
        disconnect = asyncio.ensure_future(receive())
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if not head and status not in NO_CONTENT_STATUSES:
                pieces = aiter(source) if isinstance(source, AsyncIterable) else _aiter(source)
                async for piece in pieces:
                    if disconnect.done():
                        outcome = CLIENT_DISCONNECTED
                        break
                    if piece:
                        await send(
                            {"type": "http.response.body", "body": bytes(piece), "more_body": True}
                        )
                        sent += len(piece)
            if outcome is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # spec 2.4 hosts: the client went away
            outcome = CLIENT_DISCONNECTED
        except Exception as exc:
            outcome = RESPONSE_ERROR
            events.handler_error(request, exc)  # logs it; the host closes the connection
            raise
        finally:
            if not disconnect.done():
                disconnect.cancel()
            elif not disconnect.cancelled():
                disconnect.exception()  # retrieved: a host's receive() that failed is no news
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()
            events.request_finished(request, status, sent, time.monotonic() - started)
            _finished(request, response, status, sent, outcome, started)


def _finished(
    request: Request,
    response: Response | None,
    status: int,
    sent: int,
    outcome: str | None,
    started: float,
) -> None:
    """Call ``request.on_finished`` once with what was passed to the host's ``send``."""
    hook = request.on_finished
    if hook is None:
        return
    request.on_finished = None
    try:
        hook(request, response, status, sent, outcome, time.monotonic() - started)
    except Exception:
        logger.exception("on_finished hook of %s %s failed", request.method, request.path)


async def _aiter(source: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in source:
        yield piece


def _request(scope: Scope, proxy: ProxyTrust | None = None) -> Request:
    """Build the Request the handlers see from an HTTP scope.

    The path is taken from ``raw_path`` (as the native server does: percent-decoded,
    dot-segments removed), less ``root_path``. The host server's ``client`` and ``scheme``
    are the peer and the connection's scheme; behind a proxy that ``proxy``
    (``TRUST_PROXY``) trusts, ``ctx.client_ip``, ``scheme`` and ``host`` are the forwarded
    ones, as on Nessen's own server (a host server that applied proxy headers itself, as
    uvicorn does for loopback, already gives the client: it is not a trusted proxy).

    Raises:
        ProtocolError: The path is malformed (400).
    """
    raw_path = scope.get("raw_path")
    if not raw_path:
        raw_path = scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    target = raw_path + b"?" + query if query else raw_path
    path, _ = split_target(raw_path)
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    client = scope.get("client")
    return Request(
        scope["method"],
        target,
        path,
        query,
        [(bytes(name), bytes(value)) for name, value in scope.get("headers", ())],
        client=(str(client[0]), int(client[1])) if client else None,
        http_version=scope.get("http_version", "1.1"),
        scheme="https" if scope.get("scheme") == "https" else "http",
        proxy=proxy,
    )


def _client(scope: Scope) -> tuple[str, int] | None:
    client = scope.get("client")
    return (str(client[0]), int(client[1])) if client else None


def _content_length(request: Request) -> int | None:
    for name, value in request._raw_headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _header_list(response: Response) -> list[tuple[bytes, bytes]]:
    """The response's fields as ASGI header pairs, without those the host owns.

    Raises:
        ResponseError: A name that is not a token, or CR, LF or NUL in a value, or text
            past U+00FF (RFC 9110 §5.5).
    """
    pairs: list[tuple[bytes, bytes]] = []
    if response.content_type is not None:
        pairs.append((b"content-type", field_value(response.content_type)))
    if response._headers is not None or response._encoded:  # pre-encoded fields too
        for name, value in response.headers.multi_items():
            raw = name.encode("latin-1", "replace").lower()
            if raw in SERVER_FIELD_NAMES:  # the host server's: framing, Date, Server
                continue
            if not FIELD_NAME_BYTES.fullmatch(raw):
                raise ResponseError(f"response header name {name[:64]!r} is not a token")
            pairs.append((raw, field_value(value)))
    return pairs


async def _send_error(
    send: Send,
    error: ProtocolError,
    *,
    head: bool,
    retry_after: bool = False,
    request_id: str | None = None,
) -> int:
    """Send the JSON error answer the native server sends for ``error``, and close.

    ``request_id`` (visible ASCII), when given, goes in the body and in ``X-Request-ID``.

    Returns:
        The content bytes passed to ``send`` (0 for HEAD).
    """
    body = error_body(error.status, error.reason, request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode("latin-1")))
    start: Message = {"type": "http.response.start", "status": error.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})
    return 0 if head else len(body)
