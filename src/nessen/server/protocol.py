"""One client connection: HTTP/1.1 parsing (httptools/llhttp), limits, deadlines, responses.

The protocol owns the parser, the transport and the connection's deadlines. It builds a
:class:`~nessen.http.Request` when the header section is complete, reads the content,
then calls the server's handler and writes back the :class:`~nessen.http.Response`.
Requests pipelined behind a busy one wait in a short queue and are answered in order
(RFC 9112 §9.3.2); reading pauses while one waits, so the queue stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import sys
import termios
import time
from collections import deque
from collections.abc import AsyncIterable
from typing import Any

import httptools

from nessen.errors import ProtocolError
from nessen.http import Request, Response
from nessen.http.request import (
    CLIENT_DISCONNECTED,
    REQUEST_TIMEOUT,
    RESPONSE_ERROR,
    SEND_TIMEOUT,
    SHUTDOWN_CUT,
)
from nessen.http.response import SwitchingProtocols
from nessen.http.target import split_target
from nessen.server.body import (
    HIGH_WATER_BYTES,
    ClientDisconnected,
    PreparedResponse,
    RequestChannel,
    StreamedRequest,
)
from nessen.server.h1 import policy
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
from nessen.server.h1.phase import (
    ALLOWED,
    BODY,
    HANDLING,
    HEAD,
    IDLE,
    LINGER,
    Phase,
    check_transition,
)
from nessen.server.state import ServerState

INF = float("inf")
logger = logging.getLogger("nessen.server")

PROBE_RESERVE = 16
"""Connections accepted past max_connections only to see whether they are probes (paths in
``config.probe_paths``): those are answered, the rest get 503 once their request line is in,
so a liveness probe does not fail because the server is busy."""
OVER_LIMIT_HEADERS_TIMEOUT = 1.0
"""Header deadline, in seconds, for a connection accepted into that reserve."""
CHUNK_OVERHEAD_SLACK = 64 * 1024
"""Bytes of chunked framing (sizes, extensions, trailers) allowed beyond twice the content."""
DRAIN_FRESH_GRACE = 2.0
"""Seconds a connection accepted just before a drain has to send its first request."""
DRAIN_IDLE_GRACE = 0.5
"""Seconds an idle keep-alive connection stays open once a drain starts: a request the
client sends meanwhile is served, with ``Connection: close``, instead of crossing the close
on the wire (which a client that does not retry sees as a failed request)."""
LINGER_SECONDS = 2.0
"""How long a connection stays half-open after an error so the client can read it."""
FEED_SLICE = 4096
"""Bytes handed to the parser at a time from a larger read. Between slices the connection
looks at what it holds, so an unfinished header section is refused at most one slice past
its limit, and parsing can stop at a slice boundary with the rest kept unparsed."""
PIPELINE_DEPTH = 16
"""Requests parsed and queued on one connection before parsing stops: the rest of what was
read waits unparsed, reading is paused (the kernel's buffers then push back on the
client), and parsing resumes as responses go out (RFC 9112 §9.3.2)."""
HEAD_FRAMING_SLACK = 1024
"""Raw bytes of a header section beyond ``max_header_bytes`` (which counts the target and
the fields) allowed for the request line's framing and optional whitespace."""

_SPECIAL_LENGTHS = frozenset({4, 6, 14, 17})  # host, expect, content-length, transfer-encoding
MAX_METHOD_START = 64
"""Bytes of a request's start kept while its method is read, to classify a bad method."""


class HttpProtocol(asyncio.Protocol):
    """An HTTP/1.x server connection (``asyncio.Protocol``).

    Limits are enforced as bytes arrive: request target (414), header section size and
    field count (431), declared and received content size (413), header and content
    deadlines (408), all answered before the connection is closed. Framing the parser
    accepts but RFC 9112 forbids is refused here: a missing or repeated Host on HTTP/1.1,
    transfer codings other than a final ``chunked`` (501), versions other than 1.0 and
    1.1 (505).
    """

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._config = state.config
        self._loop = state.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        # The message being parsed.
        self._in_message = False
        self._messages_begun = 0
        self._method_start: bytes | None = b""
        self._head_request = False
        self._in_head = False
        self._url: list[bytes] = []
        self._url_bytes = 0
        self._url_in_read = False  # a piece of the target came in the read being parsed
        self._target_ended = False  # the last read stopped right after the target
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._host_count = 0
        self._host = b""
        self._te_count = 0
        self._transfer_encoding = b""
        self._expect: bytes | None = None
        self._content_length = -1
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._body_raw = 0
        self._held = 0  # content bytes of this connection's requests counted in the budget
        self._over_limit = False
        self._parsing: Request | None = None
        self._parsing_keep_alive = True
        self._started = 0.0
        # Requests parsed and waiting, and the one being handled.
        self._queue: deque[tuple[Request, bool, float]] = deque()
        self._current: tuple[Request, bool, float] | None = None
        self._busy = False
        self._answered = False
        self._task: asyncio.Task[Any] | None = None
        self._served = 0
        self._drain_grace = False  # idle when the drain began: its next request is served
        self._close_after = False
        self._closed = False
        self._eof = False
        self._stopped_parsing = False
        self._unparsed: memoryview | bytes | None = None  # read, not parsed yet (see _parse)
        self._slicing = False  # _parse is handing a large read to data_received in slices
        self._upgrade_request: Request | None = None  # the request that asked to upgrade
        self._upgrade_tail: list[memoryview] | None = None  # the bytes read after it
        self._switched_to: Any = None  # the asyncio.Protocol a 101 handed over to
        self._pending_error: ProtocolError | None = None
        self._continue_pending = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # Streaming mode: requests are dispatched at the end of their header section and
        # their content flows through a RequestChannel (see nessen.server.body).
        self._streaming = state.stream_bodies
        self._body_channel: RequestChannel | None = None  # content being parsed now
        self._body_request: Request | None = None  # its request
        self._body_paused = False  # reading paused because the channel is full
        self._read_time_left = 0.0  # header or body deadline left while we do not read
        self._held_at = 0.0  # when the read deadline was last held
        self._body_started = 0.0  # loop time the content began (shifted by held time)
        self._body_last = 0.0  # loop time content last arrived (shifted by held time)
        # What went out. A response is reported (Request.on_finished, request_finished)
        # once all of it has been handed to the kernel, or when the connection ends; while
        # part of it is still queued in the transport, its report waits in _pending.
        self._pending: tuple[Request, Response | None, int, int, float] | None = None
        self._tail_content = 0  # content bytes in the last write that carried content
        self._tail_after = 0  # bytes written after those (chunk framing, the last chunk)
        self._unsent = 0  # bytes queued in the transport when last seen (paused or cut)
        self._behind_since = 0.0  # loop.time() when output last started to stay queued
        self._behind_taken = 0  # bytes the client took from the queue since then
        self._behind_queued = 0  # bytes queued for it (ours and the kernel's) at last look
        self._cut_reason: str | None = None  # why the connection was aborted or lost
        self._kernel_discarded = False  # reset with SO_LINGER 0: the kernel's queue is lost
        # Deadlines, in loop.time() seconds, checked by the server's ticker.
        self.read_phase: Phase = HEAD
        self.read_deadline = INF
        self.handler_deadline = INF
        self.write_deadline = INF

    def _enter(self, phase: Phase, deadline: float) -> None:
        """Move to read ``phase`` with its read ``deadline`` (``loop.time()`` seconds or INF).

        Raises:
            IllegalTransition: Not a move :data:`~nessen.server.h1.phase.TRANSITIONS`
                allows: a bug of ours.
        """
        if phase not in ALLOWED[self.read_phase]:
            check_transition(self.read_phase, phase)  # raises, naming the move
        self.read_phase = phase
        self.read_deadline = deadline

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection, start its header deadline, or refuse it when full."""
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        # Pause as soon as anything stays queued, resume once all of it went to the kernel:
        # "not paused" then means "all handed over", what the reports and send_timeout
        # measure (a writer waits for the kernel to take its output, as nginx's does).
        transport.set_write_buffer_limits(0, 0)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = (str(peer[0]), int(peer[1]))
        state = self._state
        state.connections.add(self)
        self.read_deadline = self._loop.time() + self._config.headers_timeout
        if state.draining:  # accepted just before the listener closed: one request, soon
            self.read_deadline = self._loop.time() + DRAIN_FRESH_GRACE
        over = len(state.connections) - self._config.max_connections
        if over > PROBE_RESERVE:
            self._refuse(policy.too_many_connections(self._config.max_connections))
        elif over > 0:  # kept only if it turns out to be a probe
            self._over_limit = True
            self.read_deadline = self._loop.time() + min(
                OVER_LIMIT_HEADERS_TIMEOUT, self._config.headers_timeout
            )

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a running handler finishes but its response is dropped."""
        self._closed = True
        self.read_deadline = self.handler_deadline = self.write_deadline = INF
        if self._cut_reason is None:
            if exc is not None:  # reset or broken pipe: the client went away
                self._cut_reason = CLIENT_DISCONNECTED
            else:  # our close() flushed what was queued
                self._unsent = 0
        if self._pending is not None:
            self._report_pending()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        state = self._state
        state.connections.discard(self)
        if self._streaming:
            self._close_channels()
        if self._held:
            state.body_bytes -= self._held
            self._held = 0
        state.check_idle()

    def eof_received(self) -> bool | None:
        """The client shut its write side: finish what is queued, then close."""
        self._eof = True
        if self._streaming:
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
        if self.read_phase is not LINGER and (self._busy or self._queue):
            self._close_after = True
            return True  # keep the transport open to write the pending responses
        return None

    def pause_writing(self) -> None:
        """Output stays queued (the kernel's buffer is full): stop producing more."""
        self._writing_paused = True
        now = self._loop.time()
        self.write_deadline = now + self._config.send_timeout
        self._behind_since = now
        self._behind_taken = 0
        transport = self._transport
        if transport is not None:
            self._unsent = transport.get_write_buffer_size()
            self._behind_queued = self._unsent + _kernel_queued(transport)

    def resume_writing(self) -> None:
        """All output went to the kernel: report a response that waited, resume writing."""
        self._writing_paused = False
        self.write_deadline = INF
        self._unsent = 0
        if self._pending is not None:
            self._report_pending()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._busy:
            self._process_queue()

    def data_received(self, data: bytes | memoryview) -> None:
        """Parse what arrived; answer a protocol error; start queued requests.

        ``data`` is one read, or one slice of a read larger than ``FEED_SLICE``: such a read
        goes through :meth:`_parse`, which hands it back here a slice at a time.
        """
        if self._upgrade_tail is not None and not self._slicing:
            # After an Upgrade request: the bytes are the next protocol's (see _switch)
            self._upgrade_tail.append(memoryview(data))
            return
        if self.read_phase is LINGER or self._stopped_parsing:
            return
        if not self._slicing:
            if self._unparsed is not None:  # reading paused with bytes waiting: they go first
                self._unparsed = bytes(self._unparsed) + data
                return
            if len(data) > FEED_SLICE:
                self._parse(memoryview(data))
                return
        in_message, begun = self._in_message, self._messages_begun
        in_body = self.read_phase is BODY
        self._url_in_read = False
        body_before = self._body_bytes if in_body else 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                self._fail(cause)
            else:  # a bug of ours in a callback: answer 400 and close rather than hang
                self._fail(ProtocolError(f"parser callback failed: {cause!r}", reason="internal"))
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data, exc.args[0] if exc.args else len(data))
        except httptools.HttpParserInvalidMethodError:
            start = self._method_start = self._request_start(bytes(data), in_message, begun)
            self._fail(policy.method_error(start))
        except httptools.HttpParserError as exc:
            self._fail(policy.parse_error(str(exc)))
        else:
            if (
                in_body
                and self.read_phase is BODY
                and self._te_count
                and self._messages_begun == begun
            ):
                # All of ``data`` was the chunked content of one message (content and its
                # framing): it was in its content before and after, and no message began
                # in between. A read that spans a message boundary (the end of one body, a
                # whole request, the start of the next body) is not counted, since the
                # parser does not say where the boundary lies; Content-Length content has
                # no framing to count.
                self._body_raw += len(data)
                if self._body_raw > 2 * self._body_bytes + CHUNK_OVERHEAD_SLACK:
                    self._fail(policy.chunk_overhead(self._body_raw, self._body_bytes))
                    return
            if (
                in_body
                and self._body_bytes != body_before
                and self.read_phase is BODY
                and self._messages_begun == begun
            ):
                self._body_progress()
            if self._in_head:
                head = data if isinstance(data, bytes) else bytes(data)  # a slice of a read
                if not self._url:  # still in the method: keep its bytes
                    self._method_start = self._request_start(head, in_message, begun)
                elif (
                    not self._raw_headers
                    and head.endswith(b"\n")
                    and (
                        self._parser.get_http_version() == "0.0"
                        or policy.bare_request_line(
                            head,
                            self._parser.get_method(),
                            b"".join(self._url),
                            self._url_in_read,
                            self._messages_begun != begun,
                            self._target_ended,
                        )
                    )
                ):
                    # The request line ended after the target with no version: an HTTP/0.9
                    # client, which sends no header section and waits. (A newline at the end
                    # of ``data`` is this request's: it began before it.) llhttp reports the
                    # previous request's version until it reads a new one, so on a reused
                    # connection the line's own bytes decide.
                    self._fail(policy.http_0_9())
                    return
                # Whether this read stopped right after the target (a CR aside): then a
                # newline alone in the next read ends an HTTP/0.9 line.
                url = self._url
                self._target_ended = (
                    self._url_in_read
                    and bool(url)
                    and not self._raw_headers
                    and head.rstrip(b"\r").endswith(url[-1])
                )
                # What the parser holds of this header section: every byte since it began
                # (all of ``data`` when it began in ``data``: at most one slice too many).
                if self._messages_begun != begun:
                    self._raw_head_bytes = len(data)
                else:
                    self._raw_head_bytes += len(data)
                limit = self._config.max_header_bytes
                if self._raw_head_bytes > limit + HEAD_FRAMING_SLACK + FEED_SLICE:
                    self._fail(policy.header_too_large(self._raw_head_bytes, limit))
                    return
        if not self._busy and self._queue:
            self._process_queue()
        if self._reading_paused:  # for the queue: the request begun in ``data`` waits too
            self._hold_read_deadline()

    def _parse(self, data: memoryview) -> None:
        """Feed ``data`` to the parser a slice at a time, while the queue has room.

        Once ``PIPELINE_DEPTH`` requests wait, the rest is kept (without a copy) and
        reading pauses; :meth:`_process_queue` parses it as responses go out. Content of a
        known length goes in one slice, so an upload costs no more parser calls than reads.
        """
        size = len(data)
        start = 0
        self._slicing = True
        try:
            while start < size:
                if self._stopped_parsing or self.read_phase is LINGER:
                    rest = data[start:]  # after an Upgrade request: the next protocol's
                    if self._upgrade_tail is not None:
                        self._upgrade_tail.append(rest)
                    elif self._switched_to is not None:
                        self._switched_to.data_received(rest)
                    return
                if len(self._queue) >= PIPELINE_DEPTH:
                    self._unparsed = data[start:]
                    self._pause_reading()
                    return
                end = start + FEED_SLICE
                if self.read_phase is BODY and not self._te_count:
                    end = max(end, start + self._content_length - self._body_bytes)
                self.data_received(data[start:end])
                start = end
        finally:
            self._slicing = False

    def _request_start(self, data: bytes, in_message: bool, begun: int) -> bytes | None:
        """The first bytes of the request being parsed, while its method is read.

        Args:
            data: The bytes just fed to the parser.
            in_message: Whether a request had begun before they were fed.
            begun: The count of requests begun before they were fed.

        Returns:
            Up to ``MAX_METHOD_START`` bytes, or ``None`` when the request began after
            another one ended inside ``data``, at an offset the parser does not report.
        """
        new = self._messages_begun - begun
        if new == 0 and in_message and self._method_start is not None:
            return (self._method_start + data)[:MAX_METHOD_START]
        if new == 1 and not in_message:
            return data[:MAX_METHOD_START]
        return None

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        """First byte of a request: reset per-message state, start its header deadline."""
        self._in_message = True
        self._messages_begun += 1
        self._in_head = True
        self._head_request = False
        self._url = []
        self._url_bytes = 0
        self._url_in_read = False  # this request's target: none of it read yet
        self._raw_headers = []
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._host_count = 0
        self._host = b""
        self._te_count = 0
        self._expect = None
        self._content_length = -1
        self._body = []
        self._body_bytes = 0
        self._started = time.monotonic()
        phase = self.read_phase
        if phase is not HEAD:  # a later request on this connection: from its first byte
            if HEAD not in ALLOWED[phase]:  # the table, without a call on the hot path
                check_transition(phase, HEAD)
            self.read_phase = HEAD
            self.read_deadline = self._loop.time() + self._config.headers_timeout

    def on_url(self, url: bytes) -> None:
        """A piece of the request target (llhttp may split it across reads)."""
        if not self._url:  # the method is parsed: an error answer to HEAD has no content
            self._head_request = self._parser.get_method() == b"HEAD"
        self._url.append(url)
        self._url_bytes += len(url)
        self._url_in_read = True
        if self._url_bytes > self._config.max_target_bytes:
            raise policy.uri_too_long(b"".join(self._url), self._config.max_target_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        """One complete header field (or trailer field after the content)."""
        size = len(name) + len(value) + 4
        if not self._in_head:  # a trailer field: counted against the same budget, dropped
            self._head_bytes += size
            if self._head_bytes > self._config.max_header_bytes:
                raise policy.header_too_large(self._head_bytes, self._config.max_header_bytes)
            return
        headers = self._raw_headers
        headers.append((name, value))
        self._head_bytes += size
        config = self._config
        if len(headers) > config.max_header_count:
            raise policy.too_many_headers(config.max_header_count)
        if self._head_bytes + self._url_bytes > config.max_header_bytes:
            raise policy.header_too_large(
                self._head_bytes + self._url_bytes, config.max_header_bytes
            )
        if len(name) in _SPECIAL_LENGTHS:
            lower = name.lower()
            if lower == b"host":
                self._host_count += 1
                self._host = value
            elif lower == b"content-length":
                self._content_length = int(value)  # llhttp accepted only digits
            elif lower == b"transfer-encoding":
                self._te_count += 1
                self._transfer_encoding = value
            elif lower == b"expect":
                self._expect = value

    def on_headers_complete(self) -> None:
        """Validate what the parser lets through, then build the Request."""
        self._in_head = False
        parser = self._parser
        config = self._config
        version = parser.get_http_version()
        method = policy.check_head(
            version, parser.get_method(), config.allowed_methods, self._host_count, self._host
        )
        if self._te_count:
            policy.check_transfer_coding(self._te_count, self._transfer_encoding, version)
        url = self._url
        target = url[0] if len(url) == 1 else b"".join(url)
        path, query = split_target(target)
        hosts = self._state.allowed_hosts
        if hosts and path not in config.probe_paths:
            authority = policy.request_authority(target, self._host)
            if not hosts.allows(authority):
                raise policy.host_not_allowed(authority)
        if self._over_limit and path not in config.probe_paths:
            raise policy.too_many_connections(config.max_connections)
        if self._content_length > config.max_body_bytes:
            raise policy.body_too_large(self._content_length, config.max_body_bytes, declared=True)
        state = self._state
        if self._streaming:
            self._start_streamed(method, target, path, query, version)
            return
        if self._content_length > 0 and (
            state.body_bytes + self._content_length > config.body_buffer_bytes
        ):
            raise policy.body_buffer_full(state.body_bytes, config.body_buffer_bytes)
        self._parsing = Request(
            method,
            target,
            path,
            query,
            self._raw_headers,
            client=self._client,
            http_version=version,
            proxy=self._state.proxy,
        )
        self._parsing_keep_alive = parser.should_keep_alive()
        if self._content_length > 0 or self._te_count:
            self._start_body()
            if policy.expects_continue(self._expect, version):
                if self._busy or self._queue:
                    self._continue_pending = True
                else:
                    self._write(CONTINUE_RESPONSE)
        else:
            if HANDLING not in ALLOWED[self.read_phase]:  # the table, without a call
                check_transition(self.read_phase, HANDLING)
            self.read_phase = HANDLING
            self.read_deadline = INF

    def _start_streamed(
        self, method: str, target: bytes, path: str, query: bytes, version: str
    ) -> None:
        """Streaming mode: build the request; one with content is queued at once.

        Its content then goes to a :class:`RequestChannel` as it arrives. ``100 Continue``
        is sent when the handler first asks for content, not before (so a handler that
        answers without reading spares the client the upload).
        """
        request = StreamedRequest(
            method,
            target,
            path,
            query,
            self._raw_headers,
            client=self._client,
            http_version=version,
            proxy=self._state.proxy,
        )
        self._parsing = request
        keep_alive = self._parsing_keep_alive = self._parser.should_keep_alive()
        if not (self._content_length > 0 or self._te_count):
            request.channel = RequestChannel(complete=True, on_respond=self._respond_early)
            self._enter(HANDLING, INF)
            return
        expect_continue = policy.expects_continue(self._expect, version)
        channel = request.channel = RequestChannel(
            complete=False,
            on_consumed=self._body_consumed,
            on_wanted=self._body_wanted,
            expect_continue=expect_continue,
            on_respond=self._respond_early,
        )
        self._body_channel = channel
        self._body_request = request
        self._start_body()
        self._queue.append((request, keep_alive, self._started))

    def _body_consumed(self, channel: RequestChannel, size: int) -> None:
        """The handler read ``size`` content bytes: free them, read on if paused for them."""
        held = min(size, self._held)
        self._held -= held
        self._state.body_bytes -= held
        if self._body_paused and channel is self._body_channel:
            self._resume_body()

    def _body_wanted(self, channel: RequestChannel) -> None:
        """The handler waits for content: send ``100 Continue`` if the client asked for it."""
        if channel.expects_continue:
            channel.continue_sent()
            if not self._close_after:
                self._write(CONTINUE_RESPONSE)

    def _pause_body(self) -> None:
        """The channel is full: stop reading and suspend the body deadline."""
        self._body_paused = True
        transport = self._transport
        if not self._reading_paused and transport is not None:
            transport.pause_reading()
            self._reading_paused = True
        self._hold_read_deadline()

    def _resume_body(self) -> None:
        """The handler wants content again: read on, restart the rest of the body deadline."""
        self._body_paused = False
        transport = self._transport
        if self._reading_paused and not self._closed and transport is not None:
            self._reading_paused = False
            transport.resume_reading()
        self._release_read_deadline()

    def _hold_read_deadline(self) -> None:
        """Reading is paused on our side: stop the header or content deadline until it resumes.

        While we do not read (a streaming handler lags behind its content, or requests wait
        their turn in the queue with the next one begun in the same read) the client is not
        the slow one. The handler and queue deadlines bound how long this lasts.
        """
        if self.read_phase in (HEAD, BODY) and self.read_deadline != INF:
            now = self._held_at = self._loop.time()
            self._read_time_left = max(0.0, self.read_deadline - now)
            self.read_deadline = INF

    def _release_read_deadline(self) -> None:
        """Reading resumed: a held header or content deadline runs on from where it stopped.

        The time spent held does not count against the content's rate either.
        """
        if self.read_phase in (HEAD, BODY) and self.read_deadline == INF:
            now = self._loop.time()
            self.read_deadline = now + self._read_time_left
            if self.read_phase is BODY:
                held = now - self._held_at
                self._body_started += held
                self._body_last += held

    def _start_body(self) -> None:
        """The header section announced content: start its deadlines."""
        now = self._loop.time()
        self._body_raw = 0
        self._body_started = self._body_last = now
        self._enter(BODY, now + self._config.body_timeout)

    def _body_progress(self) -> None:
        """Content arrived: the body deadline moves on.

        ``body_timeout`` is the longest wait for the next piece of content (nginx's
        ``client_body_timeout``). Once the content has been arriving for ``body_timeout``,
        its average rate must also stay at ``body_min_rate`` bytes per second or above
        (Kestrel's ``MinRequestBodyDataRate``, with ``body_timeout`` as its grace period),
        so a trickle that never quite stalls is still cut. Time spent with reading paused
        on our side counts for neither.
        """
        config = self._config
        now = self._body_last = self._loop.time()
        deadline = policy.body_deadline(
            self._body_started, now, self._body_bytes, config.body_timeout, config.body_min_rate
        )
        if self.read_deadline == INF:  # held: runs on from here when reading resumes
            self._read_time_left = max(0.0, deadline - now)
        else:
            self.read_deadline = deadline

    def _close_channels(self) -> None:
        """The connection is gone: every request's channel reports a disconnect."""
        channel = self._body_channel
        if channel is not None:
            self._body_channel = self._body_request = None
            channel.close()
        if self._current is not None:
            _channel_of(self._current[0]).close()
        for queued in self._queue:
            _channel_of(queued[0]).close()

    def on_body(self, body: bytes) -> None:
        """A piece of the content (already de-chunked by the parser).

        Content is counted against the per-request limit and against the server-wide
        budget for buffered content, so many uploads at once cannot exhaust memory.
        """
        size = len(body)
        self._body_bytes += size
        config = self._config
        if self._body_bytes > config.max_body_bytes:
            raise policy.body_too_large(self._body_bytes, config.max_body_bytes, declared=False)
        state = self._state
        state.body_bytes += size
        self._held += size
        if state.body_bytes > config.body_buffer_bytes:
            raise policy.body_buffer_full(state.body_bytes - size, config.body_buffer_bytes)
        channel = self._body_channel
        if channel is None:
            self._body.append(body)
            return
        channel.feed(body)
        if channel.buffered >= HIGH_WATER_BYTES and not self._body_paused:
            self._pause_body()

    def on_message_complete(self) -> None:
        """The request is whole: queue it for the handler."""
        self._in_message = False
        request = self._parsing
        if request is None:  # pragma: no cover - llhttp always calls headers_complete first
            return
        self._parsing = None
        phase = self.read_phase
        if HANDLING not in ALLOWED[phase]:  # the table, without a call on the hot path
            check_transition(phase, HANDLING)
        self.read_phase = HANDLING
        self.read_deadline = INF
        queue = self._queue
        channel = self._body_channel
        if channel is not None:  # streaming mode: queued when its header section ended
            self._body_channel = self._body_request = None
            self._body_paused = False
            channel.finish()
        else:
            body = self._body
            if body:
                request._body = body[0] if len(body) == 1 else b"".join(body)
                self._body = []
            queue.append((request, self._parsing_keep_alive, self._started))
        if self._busy or len(queue) > 1:
            self._pause_reading()

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
                if self._writing_paused:
                    return  # resume_writing() calls back
                request, keep_alive, started = queue.popleft()
                self._dispatch(request, keep_alive, started)
            if self._busy or self._closed:
                return
            unparsed = self._unparsed
            if unparsed is None:
                break
            self._unparsed = None
            self._parse(memoryview(unparsed))
        if self._busy or self._closed:
            return
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            self._refuse(error, request=None)
            return
        if self._close_after:
            if self.read_phase is not LINGER:  # a lingering close ends on its own deadline
                self._linger()
            return
        if self._state.draining and not self._begun_before_drain():
            # Its last response is out, and nothing that began before the drain is still
            # arriving: close rather than wait idle. (A response whose head went out before
            # the drain, such as a long stream, did not say close: nothing else would end
            # this connection.)
            self._close_after = True
            self._stop_parsing()
            self._linger()
            return
        if self._continue_pending:
            self._continue_pending = False
            self._write(CONTINUE_RESPONSE)
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
            self._release_read_deadline()
        if self.read_phase is HANDLING:  # HANDLING -> IDLE is in the table: no check
            self.read_phase = IDLE
            self.read_deadline = self._loop.time() + self._config.idle_timeout

    def _dispatch(self, request: Request, keep_alive: bool, started: float) -> None:
        """Start the handler for ``request``, unless draining or overloaded refuses it."""
        state = self._state
        self._current = (request, keep_alive, started)
        self._busy = True
        self._answered = False
        if self._drain_grace:
            # The first request on a connection that was idle when the drain began: served,
            # and its response says close (see on_drain). Any pipelined behind it: 503.
            self._drain_grace = False
        elif state.draining and started >= state.drain_started and self._served:
            # A request pipelined on a reused keep-alive connection after the drain began:
            # send the client elsewhere. (The first request of a connection accepted before
            # the drain is served, with Connection: close.) It says close unless more
            # requests are queued behind it: they get their own answers, the last one
            # closing (see _last_while_draining).
            self._answer_server_error(
                request,
                ProtocolError("server is draining", status=503, reason="draining"),
                retry_after=True,
                close=False,
            )
            return
        if (
            state.active_requests >= self._config.max_concurrent_requests
            and request.path not in self._config.probe_paths
        ):
            self._answer_server_error(
                request,
                ProtocolError(
                    f"{state.active_requests} requests in handlers; max_concurrent_requests "
                    f"is {self._config.max_concurrent_requests}",
                    status=503,
                    reason="overloaded",
                ),
                retry_after=True,
                close=False,
            )
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
            outcome = self._cut_reason or (SHUTDOWN_CUT if cancelled else CLIENT_DISCONNECTED)
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
            outcome = self._cut_reason or CLIENT_DISCONNECTED
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
        if self._writing_paused:  # part of it is still queued: reported once it went out
            self._tail_content, self._tail_after = content_bytes, 0
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

        Once the connection is set to close after its queue (the client half-closed, the
        pipelining cap, an Upgrade), only the last queued response says ``close``.
        """
        limit = self._config.max_requests_per_connection
        body_request = self._body_request
        keep = (
            keep_alive
            and not (self._close_after and not self._queue)
            and not self._last_while_draining()
            and (limit == 0 or self._served + 1 < limit)
            # streaming mode: answered before its content arrived; the rest is not read
            and (
                body_request is None
                or self._current is None
                or body_request is not self._current[0]
            )
        )
        if not keep:
            self._announce_close()
        return keep

    def _begun_before_drain(self) -> bool:
        """Whether a request whose first byte came before the drain is still arriving.

        One that began later does not hold the connection open: it is dropped when the
        connection closes, for the client to retry (RFC 9112 §9.3.1), so a client that keeps
        pipelining cannot keep a draining connection open.
        """
        return (
            self._in_message
            and not self._stopped_parsing
            and self._started < self._state.drain_started
        )

    def _last_while_draining(self) -> bool:
        """Whether the response being written is the connection's last before the drain.

        From :meth:`~nessen.server.Server.announce_shutdown` on (``SHUTDOWN_DELAY``, while
        readiness already says 503 and the process still answers), responses on
        persistent connections say ``Connection: close``, so clients reconnect, through
        the load balancer, to a process that stays.

        Requests already queued (pipelined) behind it, and one that began arriving before
        the drain, are still answered, normally or with 503 (see :meth:`_dispatch`); so
        only the response to the last of them says ``Connection: close`` (RFC 9112 §9.6
        forbids answering anything after it).
        """
        state = self._state
        return (
            (state.draining or state.shutdown_pending)
            and not self._queue
            and not self._begun_before_drain()
        )

    def _announce_close(self) -> None:
        """The response being written says ``Connection: close``: nothing after it is served.

        RFC 9112 §9.6: a server that sends ``close`` must not process further requests on
        the connection, so requests still queued behind this one (and a protocol error
        found after them) are dropped unanswered, for the client to retry, and input is
        no longer parsed.
        """
        self._close_after = True
        self._queue.clear()
        self._pending_error = None
        self._continue_pending = False
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
                self._tail_content, self._tail_after = sent, 0
                response = error
                return
            self._write(head)
            self._tail_content = self._tail_after = 0
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
                self._tail_after += len(LAST_CHUNK)
        except Exception as exc:
            # The status line is gone: the only honest signal left is an aborted connection.
            # A streaming handler's stream ends with ClientDisconnected when its client left
            # (an ASGI app that stopped on http.disconnect): no error of the response.
            gone = isinstance(exc, ClientDisconnected)
            if not gone:
                state.events.handler_error(request, exc)
            self._close_after = True
            self._abort(CLIENT_DISCONNECTED if gone else RESPONSE_ERROR)
        finally:
            closer = getattr(source, "aclose", None)
            if closer is not None:
                await closer()
            status = response.status
            if self._cut_reason is not None or self._closed:
                outcome = self._cut_reason or CLIENT_DISCONNECTED
                unsent = self._unsent_content(sent)
                self._report(request, response, status, sent - unsent, outcome, started)
            elif self._writing_paused:  # all written, part still queued
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
        self._tail_content = len(piece)
        self._tail_after = 2 if chunked else 0  # the CRLF that ends a chunk
        if self._writing_paused and not self._closed:
            transport = self._transport
            if transport is not None:
                self._unsent = transport.get_write_buffer_size()
            waiter = self._drain_waiter = self._loop.create_future()
            await waiter
            self._drain_waiter = None
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
        transport = self._transport
        if transport is not None:
            self._unsent = transport.get_write_buffer_size()
        self._pending = (request, response, status, sent, started)

    def _report_pending(self) -> None:
        """The queued end of a response went out (resume_writing), or was lost or dropped."""
        pending = self._pending
        assert pending is not None
        self._pending = None
        request, response, status, sent, started = pending
        self._report(
            request, response, status, sent - self._unsent_content(sent), self._cut_reason, started
        )

    def _unsent_content(self, sent: int) -> int:
        """Content bytes of the response being reported that did not leave the server.

        ``_unsent`` bytes were queued when the connection ended: in the transport only (at
        most the last write, whose content is ``_tail_content``, followed by
        ``_tail_after`` bytes of framing), or, after a reset that discards the kernel's
        send queue too (``SEND_TIMEOUT``), also there, up to all ``sent`` content bytes
        (chunk framing in that queue is then taken for content: a few bytes per chunk).
        """
        cap = sent if self._kernel_discarded else self._tail_content
        return min(cap, max(0, self._unsent - self._tail_after))

    def _abort(self, reason: str) -> None:
        """Abort the connection for ``reason``, noting what output it drops."""
        if self._cut_reason is None:
            self._cut_reason = reason
        transport = self._transport
        if transport is None:
            return
        if not self._closed:
            self._unsent = transport.get_write_buffer_size()
        transport.abort()

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
        if current is not None and self._streaming:
            channel = _channel_of(current[0])
            channel.close()
            dropped = min(channel.discard(), self._held)
            self._held -= dropped
            self._state.body_bytes -= dropped
        elif current is not None and self._held:
            size = min(len(current[0]._body), self._held)
            self._held -= size
            self._state.body_bytes -= size
        self._busy = False
        self._current = None
        self._served += 1

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
            or (self._close_after and not self._queue)
            or self._last_while_draining()
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
            self._queue = deque(entry for entry in self._queue if entry[0] is not body_request)
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
            self._close_after = True
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
        self._stopped_parsing = True
        self._unparsed = None
        self._in_head = False
        if self.read_phase in (HEAD, BODY):
            self._enter(HANDLING, INF)

    def _refuse(self, error: ProtocolError, request: Request | None = None) -> None:
        """Send an error response and close, lingering so the client can read it."""
        self._stop_parsing()
        self._close_after = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        extra = "Retry-After: 1\r\n" if error.status == 503 else ""
        extra += self._state.events.error_fields(self._raw_headers)  # CORS; fields so far
        transport.write(
            simple_response(
                error.status,
                error_body(error.status, error.reason),
                fixed_fields=self._state.fixed_fields,
                extra=extra,
                content_type="application/json",
                head=self._head_request,
            )
        )
        self._state.events.request_rejected(
            error.reason,
            error.status,
            str(error),
            self._client,
            request or self._parsing or self._request_so_far(),
        )
        self._linger()

    def _request_so_far(self) -> Request | None:
        """A request built for the log line of a refusal that came before its Request was.

        From the message being parsed: its method, its request target (as much as arrived,
        for a 414) and the header fields read so far; for a method the parser refused, the
        method and target from the request line's first bytes. ``None`` when no target
        arrived (the request line was refused before it, or no request began).
        """
        if not self._in_message:
            return None
        if self._url:
            method = self._parser.get_method().decode("ascii", "replace")
            target = b"".join(self._url)
        else:
            words = (self._method_start or b"").lstrip(b"\r\n").split(b" ", 2)
            if len(words) < 2 or not words[1]:
                return None
            method, target = words[0][:32].decode("latin-1"), words[1]
        try:
            path, query = split_target(target)
        except ProtocolError:  # the target itself was what is wrong: log it as it came
            path, query = target.partition(b"?")[0].decode("latin-1"), b""
        return Request(
            method,
            target,
            path,
            query,
            list(self._raw_headers),
            client=self._client,
            http_version=self._parser.get_http_version(),
            proxy=self._state.proxy,
        )

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
            self._enter(LINGER, self._loop.time() + LINGER_SECONDS)
        else:  # pragma: no cover - TCP transports can always half-close
            transport.close()

    def _on_upgrade(self, data: bytes | memoryview, offset: int) -> None:
        """An Upgrade (or CONNECT) request was parsed, ending at ``offset`` in ``data``.

        What follows it belongs to the protocol the client asked for: it is kept, as
        memoryviews of what was read, for a handler that answers with
        :meth:`Response.switching_protocols <nessen.http.Response.switching_protocols>`
        (see :meth:`_switch`). A handler that answers anything else is served normally
        and the connection then closed (RFC 9110 §7.8 lets a server ignore Upgrade).
        """
        self._upgrade_request = self._queue[-1][0] if self._queue else None
        self._upgrade_tail = [memoryview(data)[offset:]] if offset < len(data) else []
        self._close_after = True
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
        self.read_deadline = self.handler_deadline = self.write_deadline = INF
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
        phase = self.read_phase
        self.read_deadline = INF
        if phase == HEAD:
            timeout = self._config.headers_timeout
            if not self._in_head:  # not one byte of a request: just close
                self._state.events.request_rejected(
                    "headers_timeout",
                    0,
                    f"no request within {timeout:g} s (headers_timeout)",
                    self._client,
                    None,
                )
                self._close()
                return
            self._fail(policy.headers_late(timeout))
        elif phase == BODY:
            config = self._config
            self._fail(
                policy.body_late(
                    self._body_started,
                    self._body_last,
                    self._body_bytes,
                    self._loop.time(),
                    config.body_timeout,
                    config.body_min_rate,
                )
            )
        elif phase in (IDLE, LINGER):
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
        """``send_timeout`` passed with output queued: go on if the client keeps up, else abort.

        The client keeps up when it took some of the queued output since the last check
        and, in all, at least ``send_min_rate`` bytes per second since output began to stay
        queued (nginx's ``send_timeout`` is the first rule; Kestrel's MinResponseDataRate
        the second). Then the deadline moves on by ``send_timeout``. Otherwise the
        connection is aborted, and the socket reset (``SO_LINGER`` 0) rather than closed: a
        plain close leaves the kernel sending what it holds to the slow reader for as long
        as it keeps its window open, which is the very resource the deadline is meant to
        take back.
        """
        self.write_deadline = INF
        config = self._config
        transport = self._transport
        reason = "send_timeout"
        detail = f"client took none of our output for {config.send_timeout:g} s (send_timeout)"
        if transport is not None and not self._closed:
            self._unsent = transport.get_write_buffer_size()
            queued = self._unsent + _kernel_queued(transport)
            taken = self._behind_queued - queued
            if taken > 0:
                now = self._loop.time()
                self._behind_queued = queued
                self._behind_taken += taken
                behind = now - self._behind_since
                if self._behind_taken >= config.send_min_rate * behind:
                    self.write_deadline = now + config.send_timeout
                    return
                reason = "send_too_slow"
                detail = (
                    f"client took {self._behind_taken} bytes of our output in {behind:.1f} s, "
                    f"below send_min_rate {config.send_min_rate} bytes/s"
                )
        current, pending = self._current, self._pending
        self._state.events.request_rejected(
            reason,
            0,
            detail,
            self._client,
            current[0] if current else pending[0] if pending else None,
        )
        transport = self._transport
        in_kernel = 0
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                in_kernel = _kernel_queued(transport)
                with contextlib.suppress(OSError):  # already gone: abort() is enough
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                    self._kernel_discarded = True  # the reset drops the kernel's queue too
        self._abort(SEND_TIMEOUT)
        if self._kernel_discarded:
            self._unsent += in_kernel

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
        if self._busy or self._queue or self._in_head or self.read_phase is BODY:
            return  # in flight: its last response will carry Connection: close
        if self.read_phase is LINGER:
            return  # its lingering close ends on its own deadline (or the drain's)
        if self._served == 0 and self.read_phase is HEAD:
            self.read_deadline = min(self.read_deadline, self._loop.time() + DRAIN_FRESH_GRACE)
            return
        if self.read_phase is IDLE:
            self._drain_grace = True
            self.read_deadline = min(self.read_deadline, self._loop.time() + DRAIN_IDLE_GRACE)
            return
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
        self.read_deadline = INF
        self._close()

    def cut(self) -> bool:
        """Drain deadline passed: cancel the handler and abort. Returns whether a request was cut.

        A request cut in its handler, mid-stream or with the end of its response still
        queued is logged and counted under the ``shutdown_cut`` reason with its id, method
        and path, and its access line (``outcome`` ``shutdown_cut``) gives the status and
        the content bytes that went out before the cut (status 0 when none did).
        """
        busy = self._busy
        current, pending = self._current, self._pending
        cut = current[0] if busy and current is not None else pending[0] if pending else None
        transport = self._transport
        if (
            cut is not None
            and current is not None
            and cut is current[0]
            and not self._answered
            and transport is not None
            and not transport.is_closing()
            and not self._writing_paused
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


_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
"""The ioctl that reads a TCP socket's unacknowledged send queue (Linux's SIOCOUTQ)."""


def _kernel_queued(transport: asyncio.Transport) -> int:
    """Bytes in the kernel's send queue of ``transport``'s socket, not yet acknowledged.

    ``SIOCOUTQ`` (Linux, ``TIOCOUTQ``); 0 where it is not available. With the transport's own
    buffer, it shows a slow reader's progress at once: the kernel wakes a writer only once
    a third of its send buffer (megabytes on a fast link) is free.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return 0


_LINGER_RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on with a zero timeout: closing sends RST and drops unsent data."""


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


def _channel_of(request: Request) -> RequestChannel:
    """The channel of a request built in streaming mode."""
    return request.channel  # type: ignore[attr-defined,no-any-return]
