"""One client connection: HTTP/1.1 parsing (httptools/llhttp), limits, deadlines, responses.

The protocol owns the parser, the transport and the connection's deadlines. It builds a
:class:`~nessen.http.Request` when the header section is complete, reads the content,
then calls the server's handler and writes back the :class:`~nessen.http.Response`.
Requests pipelined behind a busy one wait in a short queue and are answered in order
(RFC 9112 §9.3.2); reading pauses while one waits, so the queue stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable
from typing import Any

from nessen.errors import ProtocolError
from nessen.http import Request, Response
from nessen.http.request import (
    CLIENT_DISCONNECTED,
    REQUEST_TIMEOUT,
    RESPONSE_ERROR,
    SHUTDOWN_CUT,
)
from nessen.http.response import SwitchingProtocols
from nessen.server.body import (
    HIGH_WATER_BYTES,
    ClientDisconnected,
    DeferredRequest,
    PreparedResponse,
    RequestChannel,
    StreamedRequest,
)
from nessen.server.h1 import policy
from nessen.server.h1.connection import (
    BODY_PIECE,
    CLOSE,
    END,
    FAIL,
    HEAD_DONE,
    PAUSE,
    UPGRADE,
    H1Connection,
)
from nessen.server.h1.framing import (
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    NO_CONTENT_STATUSES,
    ResponseError,
    carry_fields,
    chunk,
    content_type_field,
    encode_fields,
    error_body,
    no_content_framing,
    simple_response,
    status_line,
)
from nessen.server.h1.phase import HEAD, IDLE, LINGER, Phase
from nessen.server.output import Output
from nessen.server.state import ServerState

INF = float("inf")
logger = logging.getLogger("nessen.server")

PROBE_RESERVE = 16
"""Connections accepted past max_connections only to see whether they are probes (paths in
``config.probe_paths``): those are answered, the rest get 503 once their request line is in,
so a liveness probe does not fail because the server is busy."""


class HttpProtocol(asyncio.Protocol):
    """An HTTP/1.x server connection (``asyncio.Protocol``): the glue around its core.

    What the bytes mean (parsing, limits, read phases and deadlines, the pipelining
    queue) is decided by :class:`~nessen.server.h1.connection.H1Connection`, which does
    no I/O; this class feeds it each read with the loop's time and carries out the
    actions it returns: answering, pausing and resuming reading, 100 Continue, handing
    the connection over after a 101. It also runs each request's handler in a task and
    writes its response with flow control.

    Limits are enforced as bytes arrive: request target (414), header section size and
    field count (431), declared and received content size (413), header and content
    deadlines (408), all answered before the connection is closed. Framing the parser
    accepts but RFC 9112 forbids is refused: a missing or repeated Host on HTTP/1.1,
    transfer codings other than a final ``chunked`` (501), versions other than 1.0 and
    1.1 (505).
    """

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._config = state.config
        self._loop = state.loop
        self._streaming = state.stream_bodies
        self.core = H1Connection(
            state.config,
            state,
            streaming=state.stream_bodies,
            make_request=StreamedRequest if state.stream_bodies else Request,
            make_deferred=None if state.stream_bodies else DeferredRequest,
        )
        """The connection's sans-I/O core: parsing, limits, phases, the request queue."""
        self._queue = self.core.queue
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        # The request being handled.
        self._current: tuple[Request, bool, float] | None = None
        self._busy = False
        self._answered = False
        self._task: asyncio.Task[Any] | None = None
        self._closed = False
        self._eof = False
        self._upgrade_request: Request | None = None  # the request that asked to upgrade
        self._upgrade_tail: list[memoryview] | None = None  # the bytes read after it
        self._switched_to: Any = None  # the asyncio.Protocol a 101 handed over to
        self._pending_error: ProtocolError | None = None
        self._reading_paused = False
        # Streaming mode: requests are dispatched at the end of their header section and
        # their content flows through a RequestChannel (see nessen.server.body).
        self._body_channel: RequestChannel | None = None  # content being parsed now
        self._body_request: Request | None = None  # its request
        self._body_paused = False  # reading paused because the channel is full
        # What went out: flow control, the send deadline, what a cut loses. A response is
        # reported (Request.on_finished, request_finished) once all of it has been handed
        # to the kernel, or when the connection ends (see nessen.server.output).
        self._out = Output(state.loop, state.config)
        # Deadlines, in loop.time() seconds, checked by the server's ticker (the read
        # deadline is the core's).
        self.handler_deadline = INF

    @property
    def read_phase(self) -> Phase:
        """The core's read phase (what :attr:`read_deadline` guards)."""
        return self.core.phase

    @property
    def write_deadline(self) -> float:
        """When ``send_timeout`` passes with output queued, in ``loop.time()`` seconds."""
        return self._out.deadline

    @property
    def read_deadline(self) -> float:
        """When the read phase's deadline passes, in ``loop.time()`` seconds (INF: none)."""
        return self.core.read_deadline

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection, start its header deadline, or refuse it when full."""
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        # Pause as soon as anything stays queued, resume once all of it went to the kernel:
        # "not paused" then means "all handed over", what the reports and send_timeout
        # measure (a writer waits for the kernel to take its output, as nginx's does).
        self._out.attach(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = self.core.client = (str(peer[0]), int(peer[1]))
        state = self._state
        state.connections.add(self)
        over = len(state.connections) - self._config.max_connections
        # Past the limit, kept only if it turns out to be a probe.
        self.core.open(self._loop.time(), draining=state.draining, over_limit=over > 0)
        if over > PROBE_RESERVE:
            self._refuse(policy.too_many_connections(self._config.max_connections))

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a running handler finishes but its response is dropped."""
        self._closed = True
        self.core.read_deadline = self.handler_deadline = INF
        self._out.lost(exc)
        self._output_settled()
        state = self._state
        state.connections.discard(self)
        self._close_channels()
        core = self.core
        if core.held:
            core.release(core.held)
        state.check_idle()

    def eof_received(self) -> bool | None:
        """The client shut its write side: finish what is queued, then close."""
        self._eof = True
        if self._streaming or self._body_request is not None:
            # As a lost connection: a streaming handler cannot tell a half-close from a
            # close (nor can we, short of writing), and ASGI servers report both as
            # http.disconnect. Content already received is still read; what is queued is
            # still answered.
            body_request, current = self._body_request, self._current
            self._close_channels()
            if body_request is not None and current is not None and current[0] is body_request:
                # It left in the middle of the content of the request being handled: that
                # request cannot be completed, and nothing is queued ahead of it to
                # answer. Whatever the app answers now would go to a client that is gone.
                self._abort(CLIENT_DISCONNECTED)
                return None
        if self.core.phase is not LINGER and (self._busy or self._queue):
            self.core.close_after = True
            return True  # keep the transport open to write the pending responses
        return None

    def pause_writing(self) -> None:
        """Output stays queued (the kernel's buffer is full): stop producing more."""
        self._out.on_paused()

    def resume_writing(self) -> None:
        """All output went to the kernel: report a response that waited, resume writing."""
        self._out.on_resumed()
        self._output_settled()
        if not self._busy:
            self._process_queue()

    def _output_settled(self) -> None:
        """Output went out or was lost: report a response that waited, wake a stream."""
        if self._out.pending is not None:
            self._report_pending()
        self._out.wake()

    def data_received(self, data: bytes | memoryview) -> None:
        """Feed the read to the core, carry out its actions, start queued requests."""
        tail = self._upgrade_tail
        if tail is not None:  # after an Upgrade request: the bytes are the next protocol's
            tail.append(memoryview(data))
            return
        loop_now = self._loop.time()
        core = self.core
        actions = core.receive(data, loop_now, time.monotonic())
        if actions:
            self._carry_out(actions)
        if not self._busy and core.queue:
            self._process_queue()
        if self._reading_paused:  # for the queue: the request begun in ``data`` waits too
            core.hold(loop_now)

    def _carry_out(self, actions: list[tuple[int, Any]]) -> None:
        """Do what the core asked for, in order (see :mod:`nessen.server.h1.connection`)."""
        for kind, value in actions:
            if kind == HEAD_DONE:
                self._start_streamed(*value)
            elif kind == BODY_PIECE:
                channel = self._body_channel
                if channel is not None:
                    channel.feed(value)
                    if channel.buffered >= HIGH_WATER_BYTES and not self._body_paused:
                        self._pause_body()
            elif kind == END:
                channel = self._body_channel
                if channel is not None:
                    self._body_channel = self._body_request = None
                    self._body_paused = False
                    channel.finish()
            elif kind == PAUSE:
                self._pause_reading()
            elif kind == FAIL:
                self._fail(value)
            elif kind == UPGRADE:
                self._on_upgrade(*value)

    def _start_streamed(self, request: Request, has_content: bool, expect_continue: bool) -> None:
        """Streaming mode: give a request its content channel when its header section ends.

        A request with content is queued at once; its content then goes to the channel as
        it arrives. ``100 Continue`` is sent when the handler first asks for content, not
        before (so a handler that answers without reading spares the client the upload).
        """
        if not has_content:
            request.channel = RequestChannel(  # type: ignore[attr-defined]
                complete=True, on_respond=self._respond_early
            )
            return
        streaming = self._streaming
        channel = request.channel = RequestChannel(  # type: ignore[attr-defined]
            complete=False,
            # A deferred request (buffered mode) keeps its content as its body: it stays
            # counted in the budget until the request is done.
            on_consumed=self._body_consumed if streaming else self._deferred_consumed,
            on_wanted=self._body_wanted,
            expect_continue=expect_continue,
            on_respond=self._respond_early if streaming else None,
        )
        self._body_channel = channel
        self._body_request = request

    def _body_consumed(self, channel: RequestChannel, size: int) -> None:
        """The handler read ``size`` content bytes: free them, read on if paused for them."""
        self.core.release(size)
        if self._body_paused and channel is self._body_channel:
            self._resume_body()

    def _deferred_consumed(self, channel: RequestChannel, size: int) -> None:
        """A deferred request's content was read into its body: read on if paused for it."""
        if self._body_paused and channel is self._body_channel:
            self._resume_body()

    def _body_wanted(self, channel: RequestChannel) -> None:
        """The handler waits for content: send ``100 Continue`` if the client asked for it."""
        if channel.expects_continue:
            channel.continue_sent()
            if not self.core.close_after:
                self._write(CONTINUE_RESPONSE)

    def _pause_body(self) -> None:
        """The channel is full: stop reading and suspend the body deadline."""
        self._body_paused = True
        transport = self._transport
        if not self._reading_paused and transport is not None:
            transport.pause_reading()
            self._reading_paused = True
        self.core.hold(self._loop.time())

    def _resume_body(self) -> None:
        """The handler wants content again: read on, restart the rest of the body deadline."""
        self._body_paused = False
        transport = self._transport
        if self._reading_paused and not self._closed and transport is not None:
            self._reading_paused = False
            transport.resume_reading()
        self.core.release_hold(self._loop.time())

    def _close_channels(self) -> None:
        """The connection is gone: every request's channel reports a disconnect."""
        channel = self._body_channel
        if channel is not None:
            self._body_channel = self._body_request = None
            channel.close()
        current = self._current
        if current is not None:
            _close_channel_of(current[0])
        for queued in self._queue:
            _close_channel_of(queued[0])

    def _pause_reading(self) -> None:
        """Requests wait their turn: read no more until they are answered."""
        if not self._reading_paused and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True

    # --- handling ------------------------------------------------------------------------

    def _process_queue(self) -> None:
        """Handle queued requests in order while each completes at once.

        When the queue empties, bytes kept unparsed (see :meth:`_parse`) are parsed next,
        and the requests they hold handled in turn; then reading resumes.
        """
        queue = self._queue
        while True:
            while queue and not self._busy and not self._closed:
                if self._out.paused:
                    return  # resume_writing() calls back
                request, keep_alive, started = queue.popleft()
                self._dispatch(request, keep_alive, started)
            if self._busy or self._closed:
                return
            if self.core.kept is None:  # nothing read and left unparsed
                break
            actions = self.core.resume(self._loop.time(), time.monotonic())
            if actions:
                self._carry_out(actions)
        if self._busy or self._closed:
            return
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            self._refuse(error, request=None)
            return
        if self.core.close_after:
            if self.core.phase is not LINGER:  # a lingering close ends on its own deadline
                self._linger()
            return
        if self._state.draining and not self.core.begun_before_drain():
            # Its last response is out, and nothing that began before the drain is still
            # arriving: close rather than wait idle. (A response whose head went out before
            # the drain, such as a long stream, did not say close: nothing else would end
            # this connection.)
            self.core.close_after = True
            self._stop_parsing()
            self._linger()
            return
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
            self.core.release_hold(self._loop.time())
        self.core.idle(self._loop.time())

    def _dispatch(self, request: Request, keep_alive: bool, started: float) -> None:
        """Start the handler for ``request``, unless draining or overloaded refuses it."""
        state = self._state
        self._current = (request, keep_alive, started)
        self._busy = self.core.busy = True
        self._answered = False
        core = self.core
        # The core decides; the cheap pre-check spares the call when neither a drain nor
        # the concurrency limit can refuse.
        refusal = (
            core.refusal(request, started)
            if state.draining
            or core.drain_grace
            or state.active_requests >= self._config.max_concurrent_requests
            else None
        )
        if refusal is not None:
            # Draining or overloaded: 503 + Retry-After. It says close unless more requests
            # are queued behind it: they get their own answers, the last one closing.
            self._answer_server_error(request, refusal, retry_after=True, close=False)
            return
        state.active_requests += 1
        self.handler_deadline = self._loop.time() + self._config.request_timeout
        self._task = self._loop.create_task(self._run_handler(request))
        channel = self._body_channel
        if request is self._body_request and channel and channel.buffered < HIGH_WATER_BYTES:
            self._resume_body()  # its content is still coming: read on, whatever paused it

    async def _run_handler(self, request: Request) -> None:
        """Run the handler in this connection's Task and write its response.

        The handler runs inside a real ``asyncio.Task`` (so ``asyncio.timeout``,
        ``TaskGroup`` and ``current_task()`` work in it); a timeout or drain cancels it,
        and its ``finally`` blocks run before the connection moves on.
        """
        state = self._state
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
            early = self._streaming and _channel_of(request).responded
            if not early:
                self._task = None
                self.handler_deadline = INF
            state.check_idle()
        if early:  # answered through its channel: that response's path went on already
            if cancelled:
                raise asyncio.CancelledError
            return
        current = self._current
        if self._answered or current is None:
            self._finish()
        elif cancelled or gone:  # nothing was sent: the drain cut it, or the client left
            self._answered = True
            self._close()
            outcome = self._out.cut_reason or (SHUTDOWN_CUT if cancelled else CLIENT_DISCONNECTED)
            self._report(request, None, 0, 0, outcome, current[2])
            self._finish()
        else:
            self._respond(response, in_task=True)

    def _respond(self, response: Any, *, in_task: bool = False) -> None:
        """Write ``response`` for the current request; then move to the next one."""
        current = self._current
        assert current is not None
        request, keep_alive, started = current
        if self._closed or self._transport is None or self._transport.is_closing():
            self._answered = True
            outcome = self._out.cut_reason or CLIENT_DISCONNECTED
            self._report(request, None, 0, 0, outcome, started)
            self._complete(in_task)
            return
        state = self._state
        try:
            if type(response) is not Response and not isinstance(response, Response):
                raise ResponseError(f"handler returned {type(response).__name__}, not Response")
            if response.stream is not None:
                self._answered = True
                self._task = self._loop.create_task(self._write_stream(request, response))
                return
            if response.status == 101:
                self._switch(request, response, started)
                self._complete(in_task)
                return
            data, content_bytes = self._serialize(request, response, keep_alive)
        except ResponseError as exc:
            refused, response = response, state.events.handler_error(request, exc)
            carry_fields(refused, response)
            data, content_bytes = self._serialize(request, response, keep_alive, check_size=False)
        self._answered = True
        self._write(data)
        if self._out.paused:  # part of it is still queued: reported once it went out
            self._out.tail_content, self._out.tail_after = content_bytes, 0
            self._wait_for_flush(request, response, response.status, content_bytes, started)
        else:
            self._report(request, response, response.status, content_bytes, None, started)
        self._complete(in_task)

    def _respond_early(self, channel: RequestChannel, response: Response) -> bool:
        """Streaming mode: the handler answers through its channel before returning."""
        current = self._current
        if current is None or self._answered or _channel_of(current[0]) is not channel:
            return False
        self.handler_deadline = INF
        self._respond(response, in_task=True)
        return True

    def _keep_alive(self, keep_alive: bool) -> bool:
        """Whether the response being written keeps the connection open.

        See :meth:`H1Connection.keeps_alive`; if not, nothing after it is served.
        """
        current = self._current
        # Streaming or deferred: answered before its content arrived; the rest is not read.
        unread = current is not None and current[0] is self._body_request
        keep = self.core.keeps_alive(keep_alive, unread=unread)
        if not keep:
            self._announce_close()
        return keep

    def _announce_close(self) -> None:
        """The response being written says ``Connection: close``: nothing after it is served.

        RFC 9112 §9.6: a server that sends ``close`` must not process further requests on
        the connection, so requests still queued behind this one (and a protocol error
        found after them) are dropped unanswered, for the client to retry, and input is
        no longer parsed.
        """
        self.core.close_after = True
        self._queue.clear()
        self._pending_error = None
        self._stop_parsing()

    def _head(self, request: Request, response: Response, keep: bool, framing: str) -> bytes:
        """Serialise the status line and header section.

        Raises:
            ResponseError: A bad status, or a field the handler set that cannot be sent:
                CR, LF or NUL in it, or text past U+00FF (field values are octets, RFC
                9110 §5.5; latin-1 maps each to one).
        """
        status = response.status
        if not 200 <= status <= 599:  # the policy's rule, tested here without a call
            policy.check_status(status)
        parts = [status_line(status), self._state.fixed_fields]
        if response.content_type is not None:
            parts.append(content_type_field(response.content_type))
        if response._headers is not None:
            parts.append(encode_fields(response._headers.multi_items()))
        elif type(response) is PreparedResponse:
            parts.append(response.fields)
        if response._encoded:
            parts.append(response._encoded)
        parts.append(framing)
        if not keep:
            parts.append("Connection: close\r\n")
        elif request.http_version == "1.0":
            parts.append("Connection: keep-alive\r\n")
            parts.append(self._state.keep_alive_field)
        else:
            parts.append(self._state.keep_alive_field)
        parts.append("\r\n")
        try:
            return "".join(parts).encode("latin-1")
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end]
            raise ResponseError(
                f"response header section holds {bad!r}, which is not latin-1 (RFC 9110 §5.5)"
            ) from exc

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
        limit = self._config.max_response_bytes
        if check_size and size > limit:  # (_head checks the status)
            policy.check_response(response.status, size, limit)
        if response.status in NO_CONTENT_STATUSES:
            framing = no_content_framing(response.status)
            if body:
                policy.content_dropped(
                    request, response.status, size, self._state.dropped_content_logged
                )
            body = b""
            size = 0
        else:
            framing = f"Content-Length: {size}\r\n"
        if request.method == "HEAD":
            body = b""
        keep = self._keep_alive(keep_alive)
        head = self._head(request, response, keep, framing)
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
        assert self._current is not None
        _, keep_alive, started = self._current
        state = self._state
        sent = 0
        source = response.stream
        declared: int | None = None
        chunked = False
        try:
            try:
                if response.status not in NO_CONTENT_STATUSES:
                    declared = (
                        response.content_length
                        if type(response) is PreparedResponse
                        else _declared_length(response)
                    )
                    chunked = declared is None and request.http_version == "1.1"
                    keep = self._keep_alive(keep_alive and (chunked or declared is not None))
                else:
                    keep = self._keep_alive(keep_alive)
                if chunked:
                    framing = "Transfer-Encoding: chunked\r\n"
                elif declared is not None:
                    framing = f"Content-Length: {declared}\r\n"
                else:
                    framing = no_content_framing(response.status)
                head = self._head(request, response, keep, framing)
            except ResponseError as exc:
                error = state.events.handler_error(request, exc)
                carry_fields(response, error)
                data, sent = self._serialize(request, error, False, check_size=False)
                self._write(data)
                self._out.tail_content, self._out.tail_after = sent, 0
                response = error
                return
            self._write(head)
            self._out.tail_content = self._out.tail_after = 0
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
                    if self._closed:
                        break
            elif source is not None:
                for piece in source:
                    if sent + len(piece) > limit:
                        raise ResponseError(_length_mismatch(declared, sent + len(piece)))
                    sent += await self._write_piece(piece, chunked)
                    if self._closed:
                        break
            if declared is not None and sent != declared and not self._closed:
                raise ResponseError(_length_mismatch(declared, sent))
            if chunked and not self._closed:
                self._write(LAST_CHUNK)
                self._out.tail_after += len(LAST_CHUNK)
        except Exception as exc:
            # The status line is gone: the only honest signal left is an aborted connection.
            # A streaming handler's stream ends with ClientDisconnected when its client left
            # (an ASGI app that stopped on http.disconnect): no error of the response.
            gone = isinstance(exc, ClientDisconnected)
            if not gone:
                state.events.handler_error(request, exc)
            self.core.close_after = True
            self._abort(CLIENT_DISCONNECTED if gone else RESPONSE_ERROR)
        finally:
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()
            status = response.status
            if self._out.cut_reason is not None or self._closed:
                outcome = self._out.cut_reason or CLIENT_DISCONNECTED
                unsent = self._out.unsent_content(sent)
                self._report(request, response, status, sent - unsent, outcome, started)
            elif self._out.paused:  # all written, part still queued
                self._wait_for_flush(request, response, status, sent, started)
            else:
                self._report(request, response, status, sent, None, started)
            self._finish()

    async def _write_piece(self, piece: bytes, chunked: bool) -> int:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise ResponseError(f"stream yielded {type(piece).__name__}, not bytes")
        if not piece or self._closed:
            return 0
        self._write(chunk(bytes(piece)) if chunked else piece)
        self._out.tail_content = len(piece)
        self._out.tail_after = 2 if chunked else 0  # the CRLF that ends a chunk
        if self._out.paused and not self._closed:
            await self._out.drained()
        return len(piece)

    def _report(
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
        """
        duration = time.monotonic() - started
        if status and counted:
            self._state.answered += 1
            self._state.events.request_finished(request, status, content_bytes, duration)
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

    def _wait_for_flush(
        self, request: Request, response: Response, status: int, sent: int, started: float
    ) -> None:
        """Report the response once its last queued byte went to the kernel (or was lost)."""
        self._out.hold_report((request, response, status, sent, started))

    def _report_pending(self) -> None:
        """The queued end of a response went out (resume_writing), or was lost or dropped."""
        pending = self._out.take_pending()
        assert pending is not None
        request, response, status, sent, started = pending
        out = self._out
        self._report(
            request, response, status, sent - out.unsent_content(sent), out.cut_reason, started
        )

    def _abort(self, reason: str) -> None:
        """Abort the connection for ``reason``, noting what output it drops."""
        self._out.abort(reason, lost=self._closed)

    def _complete(self, in_task: bool) -> None:
        if in_task:
            self._finish()
        else:
            self._done_with_current()

    def _finish(self) -> None:
        """The current request is done (its response written or dropped): go on."""
        self._done_with_current()
        self._process_queue()

    def _done_with_current(self) -> None:
        current = self._current
        if current is not None:
            request = current[0]
            if type(request) is not Request:  # streamed or deferred: it has a channel
                channel = _channel_of(request)
                channel.close()
                # What it left unread, and (deferred) the content it read as its body.
                self.core.release(channel.discard() + len(request._body))
            elif self.core.held:
                self.core.release(len(request._body))
        self._busy = False
        core = self.core
        core.busy = False  # (core.done(), inline on the hot path)
        core.served += 1
        self._current = None

    # --- errors, timeouts, closing -------------------------------------------------------

    def _answer_server_error(
        self,
        request: Request,
        error: ProtocolError,
        *,
        retry_after: bool = False,
        close: bool = True,
    ) -> None:
        """Answer the current request with a server-made error (503 and friends)."""
        close = (
            close
            or (self.core.close_after and not self._queue)
            or self.core.last_while_draining()
            or request is self._body_request
        )
        if close:
            self._announce_close()
        extra = "Retry-After: 1\r\n" if retry_after else ""
        extra += self._state.events.error_fields(request._raw_headers)  # CORS
        self._answered = True
        self._write(
            simple_response(
                error.status,
                error_body(error.status, error.reason),
                fixed_fields=self._state.fixed_fields,
                extra=extra,
                close=close,
                content_type="application/json",
                head=request.method == "HEAD",
            )
        )
        self._state.events.request_rejected(
            error.reason, error.status, str(error), self._client, request
        )
        self._complete(in_task=False)

    def _fail(self, error: ProtocolError) -> None:
        """A protocol error while parsing: answer it once earlier responses are out.

        In streaming mode the request whose content failed (413, 408, bad chunking) may be
        in its handler already: it is answered now and its handler cancelled, or, when its
        response has begun, the connection is aborted. If it still waits in the queue it
        is dropped from it, and the error answered in its place.
        """
        body_request = self._body_request
        self._stop_parsing()
        if body_request is not None:
            current = self._current
            if current is not None and current[0] is body_request:
                self._fail_in_handler(body_request, error)
                return
            queue = self._queue
            kept = [entry for entry in queue if entry[0] is not body_request]
            queue.clear()
            queue.extend(kept)
        if self._busy or self._queue:
            self._pending_error = error
            if not self._busy:
                # Requests queued in the read that failed and not started yet: start them
                # now. Nothing else would (parsing has stopped, so no read comes to do it,
                # and no deadline is armed), and the connection would hang open forever.
                self._process_queue()
            return
        self._refuse(error)

    def _fail_in_handler(self, request: Request, error: ProtocolError) -> None:
        """Streaming mode: the content of the request being handled failed.

        Answered now (the handler's own answer will be dropped), or, when its response
        has begun, the connection is aborted.
        """
        if self._answered:  # its response has begun: nothing honest to add, abort
            self._state.events.request_rejected(error.reason, 0, str(error), self._client, request)
            self.core.close_after = True
            self._abort(error.reason)
            return
        self._announce_close()
        self._answered = True
        self._write(
            simple_response(
                error.status,
                error_body(error.status, error.reason),
                fixed_fields=self._state.fixed_fields,
                extra=self._state.events.error_fields(request._raw_headers),  # CORS
                content_type="application/json",
                head=request.method == "HEAD",
            )
        )
        self._state.events.request_rejected(
            error.reason, error.status, str(error), self._client, request
        )
        current = self._current
        if current is not None:
            sent = 0 if request.method == "HEAD" else len(error_body(error.status, error.reason))
            self._report(request, None, error.status, sent, error.reason, current[2], counted=False)
        # The handler is not cancelled: reading on, it learns that the content will not
        # come (an ASGI app gets http.disconnect) and can unwind; its response is dropped.
        # The request deadline still cancels it if it runs on.
        if self._transport is not None and not self._transport.is_closing():
            self._linger()

    def _stop_parsing(self) -> None:
        channel = self._body_channel
        if channel is not None:  # streaming mode: the rest of its content is not read
            self._body_channel = self._body_request = None
            channel.close()
        self.core.stop()

    def _refuse(self, error: ProtocolError, request: Request | None = None) -> None:
        """Send an error response and close, lingering so the client can read it."""
        self._stop_parsing()
        self.core.close_after = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        extra = "Retry-After: 1\r\n" if error.status == 503 else ""
        extra += self._state.events.error_fields(self.core.raw_headers)  # CORS; fields so far
        transport.write(
            simple_response(
                error.status,
                error_body(error.status, error.reason),
                fixed_fields=self._state.fixed_fields,
                extra=extra,
                content_type="application/json",
                head=self.core.head_request,
            )
        )
        self._state.events.request_rejected(
            error.reason,
            error.status,
            str(error),
            self._client,
            request or self.core.request_so_far(),
        )
        self._linger()

    def _linger(self) -> None:
        """Shut our write side and drain input briefly, so the client reads our answer.

        Closing at once with unread input in the socket would send a RST that can destroy
        the response in the client's receive buffer (RFC 9112 §9.6). The linger ends when
        the client closes too, or after ``LINGER_SECONDS``; a client that has already shut
        its write side has nothing left to drain, so that connection closes at once.
        """
        transport = self._transport
        assert transport is not None
        self._upgrade_tail = None  # not switching: what followed an Upgrade is discarded
        if transport.is_closing():
            return
        if self._eof:
            transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self.core.linger(self._loop.time())
        else:  # pragma: no cover - TCP transports can always half-close
            transport.close()

    def _on_upgrade(self, request: Request | None, tail: list[memoryview]) -> None:
        """An Upgrade (or CONNECT) request was parsed; ``tail`` is what was read after it.

        What follows it belongs to the protocol the client asked for: it is kept, as
        memoryviews of what was read, for a handler that answers with
        :meth:`Response.switching_protocols <nessen.http.Response.switching_protocols>`
        (see :meth:`_switch`). A handler that answers anything else is served normally
        and the connection then closed (RFC 9110 §7.8 lets a server ignore Upgrade).
        """
        self._upgrade_request = request
        self._upgrade_tail = tail
        self.core.close_after = True
        self._stop_parsing()
        self._pause_reading()  # until the handler has answered: held, not read on
        if not self._busy and self._queue:
            self._process_queue()

    def _switch(self, request: Request, response: Response, started: float) -> None:
        """Write the 101 and hand the connection to the protocol the handler chose.

        Raises:
            ResponseError: A 101 that is not a :class:`SwitchingProtocols`, or for a
                request that did not ask to upgrade, or a protocol factory that failed:
                the server answers 500 instead (nothing was written).
        """
        if type(response) is not SwitchingProtocols or request is not self._upgrade_request:
            raise ResponseError(
                "status 101 answers only a request that asked to upgrade (Connection: "
                "Upgrade), with Response.switching_protocols()"
            )
        parts = [status_line(101), self._state.fixed_fields]
        if response._headers is not None:
            parts.append(encode_fields(response._headers.multi_items()))
        if response._encoded:
            parts.append(response._encoded)
        parts.append(f"Connection: Upgrade\r\nUpgrade: {response.protocol}\r\n\r\n")
        try:
            head = "".join(parts).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ResponseError(f"101 header section is not latin-1: {exc}") from exc
        if "\n" in response.protocol or "\r" in response.protocol:
            raise ResponseError(f"Upgrade value {response.protocol[:64]!r} holds CR or LF")
        try:
            protocol = response.protocol_factory()
        except Exception as exc:
            raise ResponseError(f"the 101's protocol factory failed: {exc!r}") from exc
        transport = self._transport
        assert transport is not None
        self._answered = True
        transport.write(head)
        self._report(request, response, 101, 0, None, started)
        # HTTP is over on this connection: forget it, and let the new protocol read.
        tail, self._upgrade_tail = self._upgrade_tail or [], None
        self._closed = True
        self.core.read_deadline = self.handler_deadline = self._out.deadline = INF
        state = self._state
        state.connections.discard(self)
        state.adopt_upgraded(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._switched_to = protocol
        try:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            for piece in tail:
                if piece:
                    protocol.data_received(piece)
        except Exception:
            logger.exception(
                "the protocol switched to (%s) failed at the hand-over; connection aborted",
                response.protocol,
                extra={"request_id": request.id, "method": request.method, "path": request.path},
            )
            transport.abort()
        state.check_idle()

    def _close(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _write(self, data: bytes | tuple[bytes, bytes]) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        if isinstance(data, tuple):
            transport.writelines(data)
        else:
            transport.write(data)

    # --- deadlines (called by the server's ticker) ---------------------------------------

    def on_read_deadline(self) -> None:
        """The read deadline passed: 408 for a slow request, close for an idle connection."""
        core = self.core
        phase = core.phase
        error = core.read_deadline_passed(self._loop.time())
        if error is not None:
            self._fail(error)
        elif phase is HEAD:  # not one byte of a request: just close
            self._state.events.request_rejected(
                "headers_timeout",
                0,
                f"no request within {self._config.headers_timeout:g} s (headers_timeout)",
                self._client,
                None,
            )
            self._close()
        elif phase is IDLE or phase is LINGER:
            self._close()

    def on_handler_timeout(self) -> None:
        """The handler overran request_timeout: 503 now, cancel it, close the connection.

        The close lingers, as for a refusal: requests the client pipelined behind this one
        may sit unread in the socket, and closing over them would reset the connection.
        """
        self.handler_deadline = INF
        task = self._task
        current = self._current
        if task is None or current is None:
            return
        if self._answered:  # the server refused its content already; the handler ran on
            task.cancel()
            return
        self._answer_in_handlers_place(
            current,
            REQUEST_TIMEOUT,
            f"handler ran past {self._config.request_timeout:g} s (request_timeout); cancelled",
        )
        task.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._linger()

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
        self._announce_close()
        self._answered = True
        request_id = request.id
        body = error_body(503, reason, request_id)
        self._write(
            simple_response(
                503,
                body,
                fixed_fields=self._state.fixed_fields,
                extra=f"Retry-After: 1\r\nX-Request-ID: {request_id}\r\n"
                + self._state.events.error_fields(request._raw_headers),  # CORS
                content_type="application/json",
                head=request.method == "HEAD",
            )
        )
        self._state.events.request_rejected(reason, 503, detail, self._client, request)
        sent = 0 if request.method == "HEAD" else len(body)
        self._report(request, None, 503, sent, reason, current[2], counted=False)

    def on_write_timeout(self) -> None:
        """``send_timeout`` passed with output queued: go on if the client keeps up, else reset.

        See :meth:`Output.send_deadline_passed <nessen.server.output.Output.send_deadline_passed>`
        for the rule, and :meth:`~nessen.server.output.Output.reset` for why a reset.
        """
        out = self._out
        verdict = out.send_deadline_passed(lost=self._closed)
        if verdict is None:
            return
        reason, detail = verdict
        current, pending = self._current, out.pending
        self._state.events.request_rejected(
            reason,
            0,
            detail,
            self._client,
            current[0] if current else pending[0] if pending else None,
        )
        out.reset(lost=self._closed)

    def on_drain(self) -> None:
        """The server is draining: close soon if idle, else after the current response.

        An idle keep-alive connection is closed after ``DRAIN_IDLE_GRACE`` seconds; a
        request that arrives before that is served, with ``Connection: close``. A client
        that sends back to back would otherwise often have its next request cross the
        close on the wire (RFC 9112 §9.3.1: only a client that retries recovers). A
        connection accepted before the drain that has not sent its first request yet is
        about to be used (the client saw its connect succeed): its first request is
        served likewise if it arrives within ``DRAIN_FRESH_GRACE`` seconds.
        """
        core = self.core
        verdict = core.drain(self._loop.time(), core.served)
        if verdict == CLOSE:
            self._close()

    @property
    def lingering(self) -> bool:
        """Whether only the lingering close is left (see :meth:`_linger`).

        Every response is written out of our buffer and no handler runs: the connection
        waits only for the client's FIN, so closing it loses nothing.
        """
        transport = self._transport
        return (
            self.read_phase is LINGER
            and not self._busy
            and not self._closed
            and transport is not None
            and transport.get_write_buffer_size() == 0
        )

    def end_linger(self) -> None:
        """Drain deadline passed during the lingering close: close now (not a cut)."""
        self.core.read_deadline = INF
        self._close()

    def cut(self) -> bool:
        """Drain deadline passed: cancel the handler and abort. Returns whether a request was cut.

        A request cut in its handler, mid-stream or with the end of its response still
        queued is logged and counted under the ``shutdown_cut`` reason with its id, method
        and path, and its access line (``outcome`` ``shutdown_cut``) gives the status and
        the content bytes that went out before the cut (status 0 when none did).
        """
        busy = self._busy
        current, pending = self._current, self._out.pending
        cut = current[0] if busy and current is not None else pending[0] if pending else None
        transport = self._transport
        if (
            cut is not None
            and current is not None
            and cut is current[0]
            and not self._answered
            and transport is not None
            and not transport.is_closing()
            and not self._out.paused
        ):
            # Its response has not begun: the client gets a 503 it can retry elsewhere
            # rather than a bare close, which it cannot tell from a crash.
            self._answer_in_handlers_place(
                current,
                SHUTDOWN_CUT,
                "still running at the drain deadline (shutdown_timeout): cancelled, answered "
                "503 with Connection: close",
            )
            if self._task is not None:
                self._task.cancel()
            # After the 503, a plain close (FIN), not the abort below: the process is about
            # to exit, and an abort could reset the connection before the client has read
            # the answer. Nothing more is done on it (the server's close() skips it).
            transport.close()
            self._closed = True
            self._state.connections.discard(self)
            return True
        if cut is not None:
            self._state.events.request_rejected(
                "shutdown_cut",
                0,
                "still running at the drain deadline (shutdown_timeout): cancelled, "
                "connection aborted",
                self._client,
                cut,
            )
        if self._task is not None:
            self._task.cancel()
        self._abort(SHUTDOWN_CUT)
        return cut is not None


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
