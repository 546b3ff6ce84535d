"""A request's life on one connection: its content, handler task, deadline and response.

:class:`~nessen.server.protocol.HttpProtocol` (the glue) feeds bytes to the connection's
core and starts each request the core queues; from there the connection's
:class:`Exchange` carries it: the request's content channel (streaming mode), the handler
in its own task under ``request_timeout``, the response serialised and written with flow
control (a stream waits whenever the client lags), what went out reported once, and the
server's own answers in the handler's place (drain or overload refusals, the request
deadline, the drain's cut, content refused while the handler runs). When the request is
done the exchange hands back to the glue, which starts the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any

from nessen.errors import ProtocolError
from nessen.http import Request, Response
from nessen.http.request import (
    CLIENT_DISCONNECTED,
    REQUEST_TIMEOUT,
    RESPONSE_ERROR,
    SHUTDOWN_CUT,
)
from nessen.server.body import HIGH_WATER_BYTES, ClientDisconnected, RequestChannel
from nessen.server.h1 import policy
from nessen.server.h1.connection import H1Connection
from nessen.server.h1.framing import (
    ASKS_CLOSE,
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    NO_CONTENT_STATUSES,
    OWN_DATE,
    OWN_SERVER,
    PreparedResponse,
    ResponseError,
    carry_fields,
    chunk,
    claims_of,
    error_answer,
    no_content_framing,
    response_head,
)
from nessen.server.output import Output
from nessen.server.state import ServerState

if TYPE_CHECKING:
    from nessen.server.protocol import HttpProtocol

INF = float("inf")
CLOSE_FIELD = "Connection: close\r\n"
TLS_SLICE = 64 * 1024
"""Bytes per write of a large buffered body over TLS (see ``Exchange._write_sliced``)."""
logger = logging.getLogger("nessen.server")


class Exchange:
    """The request being handled on one connection, from dispatch to its report.

    One per connection, reused for each request in turn (no object per request). The
    request in hand is :attr:`current` (``(request, keep_alive, started)``, ``started``
    in ``time.monotonic()`` seconds); :attr:`answered` says whether its response has
    begun; :attr:`deadline` is when ``request_timeout`` passes, in ``loop.time()``
    seconds (INF: no handler runs). In streaming mode (and for a deferred
    ``Expect: 100-continue`` request) the content being parsed goes to its
    :class:`~nessen.server.body.RequestChannel` here; reading pauses while the channel
    holds ``HIGH_WATER_BYTES`` unread.
    """

    __slots__ = (
        "answered",
        "body_channel",
        "body_paused",
        "body_request",
        "busy",
        "conn",
        "core",
        "current",
        "deadline",
        "loop",
        "out",
        "state",
        "streaming",
        "task",
    )

    def __init__(self, conn: HttpProtocol, state: ServerState, core: H1Connection, out: Output):
        self.conn = conn
        self.state = state
        self.loop = state.loop
        self.streaming = state.stream_bodies
        self.core = core
        self.out = out
        self.current: tuple[Request, bool, float] | None = None
        self.busy = False
        self.answered = False
        self.task: asyncio.Task[Any] | None = None
        self.deadline = INF
        self.body_channel: RequestChannel | None = None  # content being parsed now
        self.body_request: Request | None = None  # its request
        self.body_paused = False  # reading paused because the channel is full

    # --- the request's content (streaming mode, deferred requests) -------------------------

    def start_content(self, request: Request, has_content: bool, expect_continue: bool) -> None:
        """Give a request its content channel when its header section ends.

        A request with content is queued at once; its content then goes to the channel as
        it arrives. ``100 Continue`` is sent when the handler first asks for content, not
        before (so a handler that answers without reading spares the client the upload).
        """
        if not has_content:
            request.channel = RequestChannel(  # type: ignore[attr-defined]
                complete=True, on_respond=self._respond_early
            )
            return
        streaming = self.streaming
        channel = request.channel = RequestChannel(  # type: ignore[attr-defined]
            complete=False,
            # A deferred request (buffered mode) keeps its content as its body: it stays
            # counted in the budget until the request is done.
            on_consumed=self._consumed if streaming else self._deferred_consumed,
            on_wanted=self._wanted,
            expect_continue=expect_continue,
            on_respond=self._respond_early if streaming else None,
        )
        self.body_channel = channel
        self.body_request = request

    def feed(self, piece: bytes) -> None:
        """A piece of the content being parsed: to its channel; pause reading when full."""
        channel = self.body_channel
        if channel is not None:
            channel.feed(piece)
            if channel.buffered >= HIGH_WATER_BYTES and not self.body_paused:
                self._pause_content()

    def content_ended(self) -> None:
        """The content being parsed is complete."""
        channel = self.body_channel
        if channel is not None:
            self.body_channel = self.body_request = None
            self.body_paused = False
            channel.finish()

    def drop_content(self) -> None:
        """Parsing stops: the rest of the content being parsed will not be read."""
        channel = self.body_channel
        if channel is not None:
            self.body_channel = self.body_request = None
            channel.close()

    def close_channels(self) -> None:
        """The connection is gone: every request's channel reports a disconnect."""
        self.drop_content()
        current = self.current
        if current is not None:
            _close_channel_of(current[0])
        for queued in self.core.queue:
            _close_channel_of(queued[0])

    def _consumed(self, channel: RequestChannel, size: int) -> None:
        """The handler read ``size`` content bytes: free them, read on if paused for them."""
        self.core.release(size)
        if self.body_paused and channel is self.body_channel:
            self._resume_content()

    def _deferred_consumed(self, channel: RequestChannel, size: int) -> None:
        """A deferred request's content was read into its body: read on if paused for it."""
        if self.body_paused and channel is self.body_channel:
            self._resume_content()

    def _wanted(self, channel: RequestChannel) -> None:
        """The handler waits for content: send ``100 Continue`` if the client asked for it."""
        if channel.expects_continue:
            channel.continue_sent()
            if not self.core.close_after:
                self.conn.write(CONTINUE_RESPONSE)

    def _pause_content(self) -> None:
        """The channel is full: stop reading and suspend the body deadline."""
        self.body_paused = True
        self.conn.pause_reading()
        self.core.hold(self.loop.time())

    def _resume_content(self) -> None:
        """The handler wants content again: read on, restart the rest of the body deadline."""
        self.body_paused = False
        self.conn.resume_reading()
        self.core.release_hold(self.loop.time())

    # --- the handler ----------------------------------------------------------------------

    def dispatch(self, request: Request, keep_alive: bool, started: float) -> None:
        """Start the handler for ``request``, unless draining or overloaded refuses it."""
        state = self.state
        self.current = (request, keep_alive, started)
        self.busy = self.core.busy = True
        self.answered = False
        core = self.core
        # The core decides; the cheap pre-check spares the call when neither a drain nor
        # the concurrency limit can refuse.
        refusal = (
            core.refusal(request, started)
            if state.draining
            or core.drain_grace
            or state.active_requests >= state.config.max_concurrent_requests
            else None
        )
        if refusal is not None:
            # Draining or overloaded: 503 + Retry-After. It says close unless more requests
            # are queued behind it: they get their own answers, the last one closing.
            self.refuse(request, refusal, retry_after=True, close=False)
            return
        state.active_requests += 1
        self.deadline = self.loop.time() + state.config.request_timeout
        self.task = self.loop.create_task(self._run(request))
        channel = self.body_channel
        if request is self.body_request and channel and channel.buffered < HIGH_WATER_BYTES:
            self._resume_content()  # its content is still coming: read on, whatever paused it
            if self.core.kept is not None:
                # It filled the queue as its header section ended, so parsing stopped
                # inside its content: the rest waits unparsed, and now has room to go.
                self.conn.parse_kept()

    async def _run(self, request: Request) -> None:
        """Run the handler in this connection's Task and write its response.

        The handler runs inside a real ``asyncio.Task`` (so ``asyncio.timeout``,
        ``TaskGroup`` and ``current_task()`` work in it); a timeout or drain cancels it,
        and its ``finally`` blocks run before the connection moves on.
        """
        state = self.state
        response: Any = None
        cancelled = gone = False
        try:
            response = await state.handler(request)
        except asyncio.CancelledError:
            cancelled = True
        except ClientDisconnected:  # a streaming handler gave up: its client went away
            gone = True
        except Exception as exc:
            response = state.events.handler_error(request, exc)
        finally:
            state.active_requests -= 1
            early = self.streaming and _channel_of(request).responded
            if not early:
                self.task = None
                self.deadline = INF
            state.check_idle()
        if early:  # answered through its channel: that response's path went on already
            if cancelled:
                raise asyncio.CancelledError
            return
        current = self.current
        if self.answered or current is None:
            self.finish()
        elif cancelled or gone:  # nothing was sent: the drain cut it, or the client left
            self.answered = True
            self.conn.close()
            outcome = self.out.cut_reason or (SHUTDOWN_CUT if cancelled else CLIENT_DISCONNECTED)
            self.report(request, None, 0, 0, outcome, current[2])
            self.finish()
        else:
            try:
                self.respond(response, in_task=True)
            except Exception:
                # A fault of the server's own (what a handler can get wrong is answered with
                # a 500 inside respond): the connection's state is not known, so it is cut,
                # rather than left open with nothing to answer it or time it out.
                logger.exception(
                    "writing the response failed in the server; connection aborted",
                    extra={
                        "request_id": request.id,
                        "method": request.method,
                        "path": request.path,
                    },
                )
                transport = self.conn.transport
                if transport is not None:
                    transport.abort()

    # --- the response ---------------------------------------------------------------------

    def respond(self, response: Any, *, in_task: bool = False) -> None:
        """Write ``response`` for the current request; then move to the next one."""
        current = self.current
        assert current is not None
        request, keep_alive, started = current
        conn = self.conn
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            self.answered = True
            outcome = self.out.cut_reason or CLIENT_DISCONNECTED
            self.report(request, None, 0, 0, outcome, started)
            self._complete(in_task)
            return
        state = self.state
        try:
            if type(response) is not Response and not isinstance(response, Response):
                raise ResponseError(f"handler returned {type(response).__name__}, not Response")
            if response.stream is not None:
                self.answered = True
                self.task = self.loop.create_task(self._write_stream(request, response))
                return
            if response.status == 101:
                conn.switch(request, response, started)
                self._complete(in_task)
                return
            data, content_bytes = self._serialize(request, response, keep_alive)
        except Exception as exc:  # ResponseError, or a response built wrong in another way
            if not isinstance(exc, ResponseError):
                problem = ResponseError(f"handler's response could not be sent: {exc!r}")
                problem.__cause__ = exc
                exc = problem
            refused, response = response, state.events.handler_error(request, exc)
            carry_fields(refused, response)
            data, content_bytes = self._serialize(request, response, keep_alive, check_size=False)
        self.answered = True
        if type(data) is tuple and state.tls is not None:  # a large body over TLS: in slices
            self.task = self.loop.create_task(self._write_sliced(request, response, data, started))
            return
        conn.write(data)
        out = self.out
        if out.paused:  # part of it is still queued: reported once it went out
            out.tail_content, out.tail_after = content_bytes, 0
            out.hold_report((request, response, response.status, content_bytes, started))
        else:
            self.report(request, response, response.status, content_bytes, None, started)
        self._complete(in_task)

    def _respond_early(self, channel: RequestChannel, response: Response) -> bool:
        """Streaming mode: the handler answers through its channel before returning."""
        current = self.current
        if current is None or self.answered or _channel_of(current[0]) is not channel:
            return False
        self.deadline = INF
        self.respond(response, in_task=True)
        return True

    def _connection_fields(self, request: Request, keep_alive: bool) -> str:
        """The connection fields of the response being written (see ``keeps_alive``).

        Whether it keeps the connection open is :meth:`H1Connection.keeps_alive`'s call;
        if not, nothing after it is served (the glue's ``announce_close``).
        """
        current = self.current
        # Streaming or deferred: answered before its content arrived; the rest is not read.
        unread = current is not None and current[0] is self.body_request
        if not self.core.keeps_alive(keep_alive, unread=unread):
            self.conn.announce_close()
            return CLOSE_FIELD
        if request._version == "1.0":  # (http_version, without the property call)
            return "Connection: keep-alive\r\n" + self.state.keep_alive_field
        return self.state.keep_alive_field

    def _serialize(
        self, request: Request, response: Response, keep_alive: bool, *, check_size: bool = True
    ) -> tuple[bytes | tuple[bytes, bytes], int]:
        """Return what to write (one buffer, or head and a large body) and the content size.

        ``check_size=False`` is for the server's own 500 that replaces a faulty response:
        in development it carries a traceback that may exceed ``max_response_bytes``.

        Raises:
            ResponseError: The response cannot be sent as built.
        """
        body = response.body
        size = len(body)
        state = self.state
        limit = state.config.max_response_bytes
        if check_size and size > limit:  # (response_head checks the status)
            policy.check_response(response.status, size, limit)
        if response.status in NO_CONTENT_STATUSES:
            framing = no_content_framing(response.status)
            if body:
                policy.content_dropped(request, response.status, size, state.dropped_content_logged)
            body = b""
            size = 0
        else:
            framing = f"Content-Length: {size}\r\n"
        if request._method == "HEAD":
            body = b""
        fixed = state.fixed_fields
        claims = (
            response.claims
            if type(response) is PreparedResponse
            else 0
            if response._headers is None
            else claims_of(response)
        )
        if claims:  # the handler set Server, Date or Connection: close itself
            fixed = state.fixed_variants[claims & 3]
            keep_alive = keep_alive and not claims & ASKS_CLOSE
            _note_claims(claims)
        connection = self._connection_fields(request, keep_alive)
        head = response_head(response, fixed, framing, connection)
        if len(body) < 65536:
            return head + body, len(body)
        return (head, body), len(body)  # no copy of a large body

    async def _write_stream(self, request: Request, response: Response) -> None:
        """Write a streamed response chunk by chunk, waiting whenever the client lags.

        Framing: a ``Content-Length`` the handler set is kept and the stream must produce
        exactly that many bytes (more, or fewer at its end, aborts the connection: the
        client must not take a truncated message for a whole one); without one, chunked
        transfer coding on HTTP/1.1 (RFC 9112 §7.1) and close-delimited on HTTP/1.0.
        """
        assert self.current is not None
        _, keep_alive, started = self.current
        state, conn, out = self.state, self.conn, self.out
        sent = 0
        source = response.stream
        declared: int | None = None
        chunked = False
        try:
            try:
                fixed = state.fixed_fields
                claims = claims_of(response)
                if claims:  # the handler set Server, Date or Connection: close itself
                    fixed = state.fixed_variants[claims & 3]
                    keep_alive = keep_alive and not claims & ASKS_CLOSE
                    _note_claims(claims)
                if response.status not in NO_CONTENT_STATUSES:
                    declared = (
                        response.content_length
                        if type(response) is PreparedResponse
                        else _declared_length(response)
                    )
                    chunked = declared is None and request.http_version == "1.1"
                    keep = keep_alive and (chunked or declared is not None)
                else:
                    keep = keep_alive
                connection = self._connection_fields(request, keep)
                if chunked:
                    framing = "Transfer-Encoding: chunked\r\n"
                elif declared is not None:
                    framing = f"Content-Length: {declared}\r\n"
                else:
                    framing = no_content_framing(response.status)
                head = response_head(response, fixed, framing, connection)
            except ResponseError as exc:
                error = state.events.handler_error(request, exc)
                carry_fields(response, error)
                data, sent = self._serialize(request, error, False, check_size=False)
                conn.write(data)
                out.tail_content, out.tail_after = sent, 0
                response = error
                return
            conn.write(head)
            out.tail_content = out.tail_after = 0
            if response.status in NO_CONTENT_STATUSES:
                policy.content_dropped(request, response.status, -1, state.dropped_content_logged)
                return
            if request.method == "HEAD":
                return
            limit = INF if declared is None else declared
            if isinstance(source, AsyncIterable):
                async for piece in source:
                    if sent + len(piece) > limit:
                        raise ResponseError(_length_mismatch(declared, sent + len(piece)))
                    sent += await self._write_piece(piece, chunked)
                    if conn.closed:
                        break
            elif source is not None:
                for piece in source:
                    if sent + len(piece) > limit:
                        raise ResponseError(_length_mismatch(declared, sent + len(piece)))
                    sent += await self._write_piece(piece, chunked)
                    if conn.closed:
                        break
            if declared is not None and sent != declared and not conn.closed:
                raise ResponseError(_length_mismatch(declared, sent))
            if chunked and not conn.closed:
                conn.write(LAST_CHUNK)
                out.tail_after += len(LAST_CHUNK)
        except Exception as exc:
            # The status line is gone: the only honest signal left is an aborted connection.
            # A streaming handler's stream ends with ClientDisconnected when its client left
            # (an ASGI app that stopped on http.disconnect): no error of the response.
            gone = isinstance(exc, ClientDisconnected)
            if not gone:
                state.events.handler_error(request, exc)
            self.core.close_after = True
            out.abort(CLIENT_DISCONNECTED if gone else RESPONSE_ERROR, lost=conn.closed)
        finally:
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()
            status = response.status
            if out.cut_reason is not None or conn.closed:
                outcome = out.cut_reason or CLIENT_DISCONNECTED
                unsent = out.unsent_content(sent)
                self.report(request, response, status, sent - unsent, outcome, started)
            elif out.paused:  # all written, part still queued
                out.hold_report((request, response, status, sent, started))
            else:
                self.report(request, response, status, sent, None, started)
            self.finish()

    async def _write_sliced(
        self, request: Request, response: Response, data: tuple[bytes, bytes], started: float
    ) -> None:
        """Write a large body over TLS in ``TLS_SLICE`` pieces, waiting whenever the client lags.

        A TLS transport encrypts a write at once and hands all of it to the socket
        transport under it, whose buffer this side cannot see: written whole, a 50 MB body
        would sit there unreported, and ``SEND_TIMEOUT`` would never start. Written in
        slices, at most about two of them wait in user space, and a client that stops
        reading pauses the writing (see :meth:`Output.attach`).
        """
        conn, out = self.conn, self.out
        head, body = data
        sent = 0
        conn.write(head)
        out.tail_content = out.tail_after = 0
        view = memoryview(body)
        try:
            for start in range(0, len(body), TLS_SLICE):
                if conn.closed:
                    break
                piece = view[start : start + TLS_SLICE]
                conn.write(piece)  # type: ignore[arg-type]
                out.tail_content = len(piece)
                sent += len(piece)
                if out.paused and not conn.closed:
                    await out.drained()
        finally:
            status = response.status
            if out.cut_reason is not None or conn.closed:
                unsent = out.unsent_content(sent)
                outcome = out.cut_reason or CLIENT_DISCONNECTED
                self.report(request, response, status, sent - unsent, outcome, started)
            elif out.paused:
                out.hold_report((request, response, status, sent, started))
            else:
                self.report(request, response, status, sent, None, started)
            self.finish()

    async def _write_piece(self, piece: bytes, chunked: bool) -> int:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise ResponseError(f"stream yielded {type(piece).__name__}, not bytes")
        conn, out = self.conn, self.out
        if not piece or conn.closed:
            return 0
        conn.write(chunk(bytes(piece)) if chunked else piece)
        out.tail_content = len(piece)
        out.tail_after = 2 if chunked else 0  # the CRLF that ends a chunk
        if out.paused and not conn.closed:
            await out.drained()
        return len(piece)

    # --- reporting and moving on ----------------------------------------------------------

    def report(
        self,
        request: Request,
        response: Response | None,
        status: int,
        content_bytes: int,
        outcome: str | None,
        started: float,
        *,
        counted: bool = True,
    ) -> None:
        """The response to ``request`` is over: what went out, once (see Request.on_finished).

        Feeds ``request_finished`` when a status went out (``counted=False`` for the
        server's own answers, which ``request_rejected`` counts), then the request's hook.
        ``content_bytes`` is what went to the kernel; ``started`` is in ``time.monotonic()``
        seconds.
        """
        duration = time.monotonic() - started
        if status and counted:
            self.state.answered += 1
            self.state.events.request_finished(request, status, content_bytes, duration)
        hook = request.on_finished
        if hook is not None:
            request.on_finished = None
            try:
                hook(request, response, status, content_bytes, outcome, duration)
            except Exception:
                logger.exception(
                    "on_finished hook of %s %s failed",
                    request.method,
                    request.path,
                    extra={"request_id": request.id, "method": request.method},
                )

    def report_pending(self) -> None:
        """The queued end of a response went out (resume_writing), or was lost or dropped."""
        out = self.out
        pending = out.take_pending()
        assert pending is not None
        request, response, status, sent, started = pending
        self.report(
            request, response, status, sent - out.unsent_content(sent), out.cut_reason, started
        )

    def _complete(self, in_task: bool) -> None:
        if in_task:
            self.finish()
        else:
            self._done()

    def finish(self) -> None:
        """The current request is done (its response written or dropped): go on."""
        self._done()
        self.conn.process_queue()

    def _done(self) -> None:
        current = self.current
        core = self.core
        if current is not None:
            request = current[0]
            if type(request) is not Request:  # streamed or deferred: it has a channel
                channel = _channel_of(request)
                channel.close()
                # What it left unread, and (deferred) the content it read as its body.
                core.release(channel.discard() + len(request._body))
            elif core.held:
                core.release(len(request._body))
        self.busy = False
        core.busy = False  # (core.done(), inline on the hot path)
        core.served += 1
        self.current = None

    # --- the server's answers in the handler's place --------------------------------------

    def refuse(
        self,
        request: Request,
        error: ProtocolError,
        *,
        retry_after: bool = False,
        close: bool = True,
    ) -> None:
        """Answer the current request with a server-made error (503 and friends)."""
        core = self.core
        close = (
            close
            or (core.close_after and not core.queue)
            or core.last_while_draining()
            or request is self.body_request
        )
        if close:
            self.conn.announce_close()
        self.answered = True
        data, _ = error_answer(
            error.status,
            error.reason,
            fixed_fields=self.state.fixed_fields,
            cors=self.state.events.error_fields(request._raw_headers),
            retry_after=retry_after,
            close=close,
            head=request.method == "HEAD",
        )
        self.conn.write(data)
        self.state.events.request_rejected(
            error.reason, error.status, str(error), self.conn.client, request
        )
        self._complete(in_task=False)

    def content_failed(self, request: Request, error: ProtocolError) -> None:
        """The content of the request being handled failed (streaming mode, or deferred).

        Answered now (the handler's own answer will be dropped), or, when its response
        has begun, the connection is aborted.
        """
        conn, state = self.conn, self.state
        if self.answered:  # its response has begun: nothing honest to add, abort
            state.events.request_rejected(error.reason, 0, str(error), conn.client, request)
            self.core.close_after = True
            self.out.abort(error.reason, lost=conn.closed)
            return
        conn.announce_close()
        self.answered = True
        data, sent = error_answer(
            error.status,
            error.reason,
            fixed_fields=state.fixed_fields,
            cors=state.events.error_fields(request._raw_headers),
            head=request.method == "HEAD",
        )
        conn.write(data)
        state.events.request_rejected(error.reason, error.status, str(error), conn.client, request)
        current = self.current
        if current is not None:
            self.report(request, None, error.status, sent, error.reason, current[2], counted=False)
        # The handler is not cancelled: reading on, it learns that the content will not
        # come (an ASGI app gets http.disconnect) and can unwind; its response is dropped.
        # The request deadline still cancels it if it runs on.
        if conn.transport is not None and not conn.transport.is_closing():
            conn.linger()

    def on_timeout(self) -> None:
        """The handler overran request_timeout: 503 now, cancel it, close the connection.

        The close lingers, as for a refusal: requests the client pipelined behind this one
        may sit unread in the socket, and closing over them would reset the connection.
        """
        self.deadline = INF
        task = self.task
        current = self.current
        if task is None or current is None:
            return
        if self.answered:  # the server refused its content already; the handler ran on
            task.cancel()
            return
        self._answer_in_handlers_place(
            current,
            REQUEST_TIMEOUT,
            f"handler ran past {self.state.config.request_timeout:g} s (request_timeout); "
            "cancelled",
        )
        task.cancel()
        transport = self.conn.transport
        if transport is not None and not transport.is_closing():
            self.conn.linger()

    def _answer_in_handlers_place(
        self, current: tuple[Request, bool, float], reason: str, detail: str
    ) -> None:
        """Answer 503 for the request whose handler still runs, then close after it.

        For the request deadline and the drain's: ``Retry-After: 1``, ``Connection:
        close``, the CORS fields, and the request id the handler's log lines carried (a
        valid incoming one or the generated one: visible ASCII either way), in the body
        and in ``X-Request-ID``, so the client's report matches the log. Logged as a
        rejection with ``reason`` and ``detail``; its access line has status 503 and the
        outcome ``reason``.
        """
        request = current[0]
        state = self.state
        self.conn.announce_close()
        self.answered = True
        data, sent = error_answer(
            503,
            reason,
            fixed_fields=state.fixed_fields,
            cors=state.events.error_fields(request._raw_headers),
            request_id=request.id,
            retry_after=True,
            head=request.method == "HEAD",
        )
        self.conn.write(data)
        state.events.request_rejected(reason, 503, detail, self.conn.client, request)
        self.report(request, None, 503, sent, reason, current[2], counted=False)

    def cut(self) -> bool:
        """Drain deadline passed: cancel the handler and abort. Returns whether a request was cut.

        A request cut in its handler, mid-stream or with the end of its response still
        queued is logged and counted under the ``shutdown_cut`` reason with its id, method
        and path, and its access line (``outcome`` ``shutdown_cut``) gives the status and
        the content bytes that went out before the cut (status 0 when none did).
        """
        current, pending, conn = self.current, self.out.pending, self.conn
        cut = current[0] if self.busy and current is not None else pending[0] if pending else None
        transport = conn.transport
        if (
            cut is not None
            and current is not None
            and cut is current[0]
            and not self.answered
            and transport is not None
            and not transport.is_closing()
            and not self.out.paused
        ):
            # Its response has not begun: the client gets a 503 it can retry elsewhere
            # rather than a bare close, which it cannot tell from a crash.
            self._answer_in_handlers_place(
                current,
                SHUTDOWN_CUT,
                "still running at the drain deadline (shutdown_timeout): cancelled, answered "
                "503 with Connection: close",
            )
            if self.task is not None:
                self.task.cancel()
            # After the 503, a plain close (FIN), not the abort below: the process is about
            # to exit, and an abort could reset the connection before the client has read
            # the answer. Nothing more is done on it (the server's close() skips it).
            transport.close()
            conn.closed = True
            self.state.connections.discard(conn)
            return True
        if cut is not None:
            self.state.events.request_rejected(
                "shutdown_cut",
                0,
                "still running at the drain deadline (shutdown_timeout): cancelled, "
                "connection aborted",
                conn.client,
                cut,
            )
        if self.task is not None:
            self.task.cancel()
        self.out.abort(SHUTDOWN_CUT, lost=conn.closed)
        return cut is not None


_claims_noted = 0
"""The claims bits already logged (once each, at debug)."""


def _note_claims(claims: int) -> None:
    """Log once, at debug, the first response whose handler set each server field."""
    global _claims_noted
    new = claims & ~_claims_noted
    if not new:
        return
    _claims_noted |= new
    for bit, what in (
        (OWN_SERVER, "a handler's Server field replaces the server's (logged once)"),
        (OWN_DATE, "a handler's Date field replaces the server's (logged once)"),
        (
            ASKS_CLOSE,
            "a handler's Connection: close closes the connection after its response (logged once)",
        ),
    ):
        if new & bit:
            logger.debug(what)


def _declared_length(response: Response) -> int | None:
    """The ``Content-Length`` a handler set on a streamed response, if any.

    Raises:
        ResponseError: It is not one decimal number (RFC 9110 §8.6).
    """
    headers = response._headers
    if headers is None or "content-length" not in headers:
        return None
    return policy.declared_length(headers["content-length"])


def _length_mismatch(declared: int | None, sent: int) -> str:
    return f"streamed response produced {sent} bytes for its Content-Length {declared}"


def _close_channel_of(request: Request) -> None:
    """The connection is gone: a request's channel, if it has one, reports a disconnect."""
    if type(request) is not Request:  # streamed or deferred
        _channel_of(request).close()


def _channel_of(request: Request) -> RequestChannel:
    """The channel of a request built in streaming mode."""
    return request.channel  # type: ignore[attr-defined,no-any-return]
