"""The HTTP/1.1 server connection core: bytes and ``now`` in, requests and actions out.

:class:`H1Connection` owns the llhttp parser (httptools) and everything decided from the
bytes a client sends: the request checks and limits (:mod:`~nessen.server.h1.policy`),
the read phase and its deadline (:mod:`~nessen.server.h1.phase`), the queue of pipelined
requests and where parsing stops when it is full, the body deadline and rate, the
HTTP/0.9 and header-section bounds, and the point where an Upgrade request hands the
rest of the bytes over. It does no I/O and reads no clock: the asyncio glue
(:class:`~nessen.server.protocol.HttpProtocol`) feeds it each read with the loop's time,
pops the requests it queues, and carries out the actions it returns, in order.

Actions are ``(kind, value)`` pairs in a list the core reuses (it is cleared by the next
call that returns it):

=============  ==========================================================================
kind           value, and what the glue does
=============  ==========================================================================
``FAIL``       a :class:`~nessen.errors.ProtocolError`: answer it (after the queued
               requests) and close. Parsing has stopped; always the last action.
``UPGRADE``    ``(request, tail)``: the request asked to switch protocols (RFC 9110
               §7.8); ``tail`` is a list of memoryviews of what was read after it, kept
               for the next protocol. Parsing has stopped.
``PAUSE``      ``None``: stop reading from the socket (requests wait their turn).
``HEAD``       ``(request, has_content, expects_continue)``: streaming mode, a header
               section is complete; give the request its content channel.
``BODY``       ``bytes``: streaming mode, a piece of the current request's content.
``END``        the request: streaming mode, its content is complete.
=============  ==========================================================================

In buffered mode (the default) a simple request produces no action at all: it is
appended to :attr:`H1Connection.queue` with its content, and the glue looks there after
each call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import httptools

from nessen.errors import ProtocolError
from nessen.http import Request
from nessen.http.target import split_target
from nessen.server.h1 import policy
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
from nessen.server.h1.policy import HOST_VALUE, KNOWN_METHODS

if TYPE_CHECKING:
    from nessen.config import Config
    from nessen.http.forwarded import ProxyTrust

INF = float("inf")

FAIL: Final = 1
UPGRADE: Final = 2
PAUSE: Final = 4
HEAD_DONE: Final = 5
BODY_PIECE: Final = 6
END: Final = 7

KEEP: Final = 0
""":meth:`H1Connection.drain`: a request is in flight; its last response says close."""
GRACE: Final = 1
""":meth:`H1Connection.drain`: idle or fresh; the read deadline was shortened."""
CLOSE: Final = 2
""":meth:`H1Connection.drain`: close now."""

Entry = tuple[Request, bool, float]
"""A queued request: the request, whether it allows keep-alive, and when its first byte
came (``time.monotonic()`` seconds, as given to :meth:`H1Connection.receive`)."""

OVER_LIMIT_HEADERS_TIMEOUT = 1.0
"""Header deadline, in seconds, for a connection accepted past ``max_connections`` into
the probe reserve (see :meth:`H1Connection.open`)."""
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
FEED_SLICE = 8192
"""Bytes handed to the parser at a time from a larger read. Between slices the connection
looks at what it holds, so an unfinished header section is refused at most one slice past
its limit, and parsing can stop at a slice boundary with the rest kept unparsed. 8 KiB: a
request of up to that size (a 4 KiB JSON body with its head) is parsed in one feed, its
content in one piece; at 4 KiB such a request cost about 18 k more instructions (two feeds,
two content pieces joined), and the two bounds above are one slice wider."""
PIPELINE_DEPTH = 16
"""Requests parsed and queued on one connection before parsing stops: the rest of what was
read waits unparsed, reading is paused (the kernel's buffers then push back on the
client), and parsing resumes as responses go out (RFC 9112 §9.3.2)."""
HEAD_FRAMING_SLACK = 1024
"""Raw bytes of a header section beyond ``max_header_bytes`` (which counts the target and
the fields) allowed for the request line's framing and optional whitespace."""
MAX_METHOD_START = 64
"""Bytes of a request's start kept while its method is read, to classify a bad method."""

_SPECIAL_LENGTHS = frozenset({4, 6, 14, 17})  # host, expect, content-length, transfer-encoding
_NO_FIELDS: list[tuple[bytes, bytes]] = []
_NO_PIECES: list[bytes] = []
"""Shared empty lists for a connection between messages: never appended to, because
``on_message_begin`` (which llhttp calls before any other callback of a message) gives
each message lists of its own."""


class Shared(Protocol):
    """What the connections of one server share, as the core sees it.

    Attributes:
        body_bytes: Request content bytes buffered now, across connections; the core adds
            what it receives and :meth:`H1Connection.release` takes it back.
        allowed_hosts: The ``ALLOWED_HOSTS`` matcher (``None`` or empty: any host).
        proxy: Which peers' forwarded fields are trusted.
        active_requests: Requests in handlers now, across connections.
        shutdown_pending: The drain is announced (``SHUTDOWN_DELAY``): answers say close.
        draining: The drain has begun.
        drain_started: ``clock`` when it began (``INF`` before).
    """

    body_bytes: int
    allowed_hosts: Any
    proxy: ProxyTrust | None
    active_requests: int
    shutdown_pending: bool
    draining: bool
    drain_started: float


class H1Connection:
    """One HTTP/1.1 server connection's parsing state, limits, phases and deadlines.

    Sans-I/O: :meth:`receive` takes the bytes of one read and ``now``; requests come out
    on :attr:`queue` and everything else as actions (see the module's table). Every
    deadline is a value (:attr:`read_deadline`, in the glue's clock) that the glue checks
    and, once passed, reports with :meth:`read_deadline_passed`.

    Args:
        config: The limits and timeouts (``max_header_bytes``, ``headers_timeout``, ...).
        shared: The server-wide body budget, host list and proxy trust.
        streaming: Streaming mode: a request is queued at the end of its header section
            and its content comes out as ``BODY`` actions (else it is queued whole).
        make_request: The request class (:class:`~nessen.http.Request` or a subclass
            with the same constructor).
        make_deferred: Buffered mode: the class of a request with content whose client
            sent ``Expect: 100-continue`` (``make_request`` when not given). Such a
            request is handled as in streaming mode (``HEAD``, ``BODY``, ``END``
            actions), so the glue sends the ``100`` only when its content is read (RFC
            9110 §10.1.1).
        scheme: The connection's own scheme, ``"http"`` or ``"https"`` (over TLS), given
            to each request (what a trusted proxy's forwarded fields may override).

    Attributes:
        queue: Parsed requests not yet taken by the glue, oldest first.
        phase: What :attr:`read_deadline` guards.
        read_deadline: When the read phase's deadline passes (``INF``: none).
        busy: Set by the glue while a request is being handled: a request completed
            meanwhile pauses reading, and a ``100 Continue`` waits.
        close_after: Close once the queued requests are answered (the client half-closed,
            an Upgrade, an error, a response that said ``Connection: close``).
        served: Requests taken off the queue and done with (counted by :meth:`done`).
        drain_grace: Idle when the drain began: its next request is served (with
            ``Connection: close``) rather than refused.
        kept: Bytes read and not parsed yet, because the queue was full (``None``: none);
            :meth:`resume` parses them.
        stopped: Parsing has stopped (an error, an Upgrade, or a close announced); what
            arrives from then on is discarded.
        in_message: A request has begun and not ended.
        in_head: Its header section is still arriving.
        started: ``clock`` when the current (or last) request's first byte came.
        head_request: The request being parsed is a HEAD (an error answer has no content).
        raw_headers: Its header fields so far.
        held: Content bytes of this connection's requests counted in ``shared.body_bytes``.
        client: The peer's address, for the requests built.
    """

    # Slots, not an instance dict: past 30 attributes CPython 3.11 stops sharing the dict's
    # keys, and every attribute access in the callbacks then goes unspecialised (about
    # 4,000 instructions per request; docs/BENCHMARKS.md).
    __slots__ = (
        "_actions",
        "_body",
        "_body_buffer_limit",
        "_body_last",
        "_body_raw",
        "_body_started",
        "_chunk_at",
        "_chunk_open",
        "_chunk_seen",
        "_clock",
        "_config",
        "_content_length",
        "_ended_line",
        "_expect",
        "_head_bytes",
        "_held_at",
        "_host",
        "_host_checked",
        "_host_count",
        "_keep_alive",
        "_make_deferred",
        "_make_request",
        "_messages_begun",
        "_method_start",
        "_now",
        "_parser",
        "_parsing",
        "_raw_head_bytes",
        "_read_time_left",
        "_scheme",
        "_shared",
        "_slicing",
        "_stream_message",
        "_streaming",
        "_target_ended",
        "_te_count",
        "_transfer_encoding",
        "_upgrade_tail",
        "_url",
        "_url_bytes",
        "_url_in_read",
        "body_bytes",
        "busy",
        "client",
        "close_after",
        "drain_grace",
        "head_request",
        "held",
        "in_head",
        "in_message",
        "kept",
        "over_limit",
        "phase",
        "queue",
        "raw_headers",
        "read_deadline",
        "served",
        "started",
        "stopped",
    )
    _parser: httptools.HttpRequestParser
    """llhttp, made by the first read; unset while idle after :meth:`shed`."""

    def __init__(
        self,
        config: Config,
        shared: Shared,
        *,
        streaming: bool = False,
        make_request: Callable[..., Request] = Request,
        make_deferred: Callable[..., Request] | None = None,
        scheme: str = "http",
    ) -> None:
        self._config = config
        self._body_buffer_limit = config.body_buffer_bytes  # (a computed property of config)
        self._scheme = scheme
        self._shared = shared
        self._streaming = streaming
        self._make_request = make_request
        self._make_deferred = make_deferred or make_request
        self._stream_message = False  # the message's content comes out as BODY actions
        self._actions: list[tuple[int, Any]] = []
        self.client: tuple[str, int] | None = None
        # A list, not a deque: at most PIPELINE_DEPTH entries, and an empty deque holds a
        # 64-slot block (760 bytes) on every idle connection.
        self.queue: list[Entry] = []
        self.phase: Phase = HEAD
        self.read_deadline = INF
        self.busy = False
        self.close_after = False
        self.served = 0
        self.drain_grace = False
        self.stopped = False
        self.over_limit = False
        # The message being parsed.
        self.in_message = False
        self.in_head = False
        self.head_request = False
        self.started = 0.0
        self.raw_headers = _NO_FIELDS
        self._messages_begun = 0
        self._method_start: bytes | None = b""
        self._url = _NO_PIECES
        self._url_bytes = 0
        self._url_in_read = False  # a piece of the target came in the read being parsed
        self._target_ended = False  # the last read stopped right after the target
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._host_count = 0
        self._host = b""
        self._host_checked: bytes | None = None  # the last Host value the pattern allowed
        self._te_count = 0
        self._transfer_encoding = b""
        self._expect: bytes | None = None
        self._content_length = -1
        self._body = _NO_PIECES
        self.body_bytes = 0
        self._body_raw = 0
        self._chunk_seen = False  # a chunk header was parsed in the slice being fed
        self._chunk_open = False  # the last chunk's data has not all arrived
        self._chunk_at = 0  # content bytes received before the last chunk's data
        self._ended_line = False  # chunked content: the last slice ended with a LF
        self.held = 0
        self._parsing: Request | None = None
        self._keep_alive = True
        self._now = 0.0
        self._clock = 0.0
        self.kept: memoryview | bytes | None = None  # read, not parsed yet (see resume)
        self._slicing = False
        self._upgrade_tail: list[memoryview] | None = None
        # Deadlines held while the glue does not read (see hold()).
        self._read_time_left = 0.0
        self._held_at = 0.0
        self._body_started = 0.0
        self._body_last = 0.0

    # --- phases and deadlines ---------------------------------------------------------

    def enter(self, phase: Phase, deadline: float) -> None:
        """Move to read ``phase`` with its read ``deadline`` (seconds in the glue's clock).

        Raises:
            IllegalTransition: Not a move :data:`~nessen.server.h1.phase.TRANSITIONS`
                allows: a bug of ours.
        """
        if phase not in ALLOWED[self.phase]:
            check_transition(self.phase, phase)  # raises, naming the move
        self.phase = phase
        self.read_deadline = deadline

    def open(self, now: float, *, draining: bool, over_limit: bool) -> None:
        """The connection was accepted at ``now``: start its header deadline.

        ``draining``: accepted just before the listener closed, it has
        ``DRAIN_FRESH_GRACE`` seconds for one request. ``over_limit``: accepted into the
        probe reserve past ``max_connections``, it has ``OVER_LIMIT_HEADERS_TIMEOUT``
        seconds, and any request but a probe is refused with 503.
        """
        config = self._config
        self.read_deadline = now + config.headers_timeout
        if draining:
            self.read_deadline = now + DRAIN_FRESH_GRACE
        if over_limit:
            self.over_limit = True
            self.read_deadline = now + min(OVER_LIMIT_HEADERS_TIMEOUT, config.headers_timeout)

    def idle(self, now: float) -> None:
        """Every queued response is out: wait ``idle_timeout`` for the next request.

        The last request's target, fields and content are let go (the next message begins
        with new ones), so an idle keep-alive connection holds none of them.
        """
        if self.phase is HANDLING:  # HANDLING -> IDLE is in the table: no check
            self.phase = IDLE
            self.read_deadline = now + self._config.idle_timeout
            self.raw_headers = _NO_FIELDS
            self._url = self._body = _NO_PIECES
            self._host = b""

    def shed(self) -> None:
        """Idle: let go of the parser (about 1 KiB with its callbacks) until the next read.

        The server's ticker calls it for every connection it finds idle, so thousands of
        idle keep-alive connections do not each hold one; a connection busy with requests
        keeps its own. Between messages llhttp holds nothing a new parser lacks: the next
        request is parsed as the first one on a new connection is.
        """
        if self.phase is IDLE and hasattr(self, "_parser"):
            del self._parser

    def linger(self, now: float) -> None:
        """The write side is shut after an answer: discard input for ``LINGER_SECONDS``."""
        self.enter(LINGER, now + LINGER_SECONDS)

    def hold(self, now: float) -> None:
        """Reading is paused on our side: stop the header or content deadline until it resumes.

        While we do not read (a streaming handler lags behind its content, or requests wait
        their turn in the queue with the next one begun in the same read) the client is not
        the slow one. The handler and queue deadlines bound how long this lasts.
        """
        if self.phase in (HEAD, BODY) and self.read_deadline != INF:
            self._held_at = now
            self._read_time_left = max(0.0, self.read_deadline - now)
            self.read_deadline = INF

    def release_hold(self, now: float) -> None:
        """Reading resumed: a held header or content deadline runs on from where it stopped.

        The time spent held does not count against the content's rate either.
        """
        if self.phase in (HEAD, BODY) and self.read_deadline == INF:
            self.read_deadline = now + self._read_time_left
            if self.phase is BODY:
                held = now - self._held_at
                self._body_started += held
                self._body_last += held

    def read_deadline_passed(self, now: float) -> ProtocolError | None:
        """The read deadline passed at ``now``: the error to answer, or ``None`` to close.

        A header section or content that came too slowly gets 408 (``headers_late``,
        ``body_late``); an idle or lingering connection, or one that sent not one byte of
        a request, is just closed (check :attr:`phase` and :attr:`in_head` to tell them).
        """
        phase = self.phase
        self.read_deadline = INF
        config = self._config
        if phase is HEAD and self.in_head:
            return policy.headers_late(config.headers_timeout)
        if phase is BODY:
            return policy.body_late(
                self._body_started,
                self._body_last,
                self.body_bytes,
                now,
                config.body_timeout,
                config.body_min_rate,
            )
        return None

    def drain(self, now: float, served: int) -> int:
        """The server began draining: what this connection should do.

        Returns ``KEEP`` when a request is in flight or the connection lingers (its last
        response says close, or the linger ends on its own deadline); ``GRACE`` when it is
        fresh (``served`` is 0: its first request may come within ``DRAIN_FRESH_GRACE``
        seconds) or idle (``DRAIN_IDLE_GRACE``; the read deadline is shortened either
        way); ``CLOSE`` otherwise.
        """
        phase = self.phase
        if self.busy or self.queue or self.in_head or phase is BODY or phase is LINGER:
            return KEEP
        if served == 0 and phase is HEAD:
            self.read_deadline = min(self.read_deadline, now + DRAIN_FRESH_GRACE)
            return GRACE
        if phase is IDLE:
            self.drain_grace = True
            self.read_deadline = min(self.read_deadline, now + DRAIN_IDLE_GRACE)
            return GRACE
        return CLOSE

    # --- what to answer, and whether to keep the connection ----------------------------

    def refusal(self, request: Request, started: float) -> ProtocolError | None:
        """The 503 for a request taken off the queue, or ``None`` to hand it to its handler.

        ``draining``: a request that began after the drain on a connection that already
        served one (its client is sent elsewhere; the first request of a connection, or
        one that came within an idle connection's grace, is served). ``overloaded``:
        ``max_concurrent_requests`` handlers are running (probe paths are exempt).
        """
        shared = self._shared
        if self.drain_grace:
            # The first request on a connection that was idle when the drain began: served,
            # and its response says close (see drain()). Any pipelined behind it: 503.
            self.drain_grace = False
        elif shared.draining and started >= shared.drain_started and self.served:
            return ProtocolError("server is draining", status=503, reason="draining")
        config = self._config
        active = shared.active_requests
        if active >= config.max_concurrent_requests and request.path not in config.probe_paths:
            return ProtocolError(
                f"{active} requests in handlers; max_concurrent_requests "
                f"is {config.max_concurrent_requests}",
                status=503,
                reason="overloaded",
            )
        return None

    def done(self) -> None:
        """The request taken off the queue is done with (answered, or its answer dropped)."""
        self.busy = False
        self.served += 1

    def begun_before_drain(self) -> bool:
        """Whether a request whose first byte came before the drain is still arriving.

        One that began later does not hold the connection open: it is dropped when the
        connection closes, for the client to retry (RFC 9112 §9.3.1), so a client that
        keeps pipelining cannot keep a draining connection open.
        """
        return self.in_message and not self.stopped and self.started < self._shared.drain_started

    def last_while_draining(self) -> bool:
        """Whether the response being written is the connection's last before the drain.

        From the shutdown announcement on (``SHUTDOWN_DELAY``, while readiness already says
        503 and the process still answers), responses on persistent connections say
        ``Connection: close``, so clients reconnect, through the load balancer, to a
        process that stays. Requests already queued (pipelined) behind it, and one that
        began arriving before the drain, are still answered, normally or with 503 (see
        :meth:`refusal`); so only the response to the last of them says close (RFC 9112
        §9.6 forbids answering anything after it).
        """
        shared = self._shared
        return (
            (shared.draining or shared.shutdown_pending)
            and not self.queue
            and not self.begun_before_drain()
        )

    def keeps_alive(self, keep_alive: bool, *, unread: bool = False) -> bool:
        """Whether the response being written keeps the connection open (RFC 9112 §9.3).

        Args:
            keep_alive: What the request allows (its version and ``Connection`` field).
            unread: The request's content is still arriving and will not be read (it
                was answered before its content came).

        Once the connection is to close after its queue, only the last queued response
        says ``close``; so does the last before a drain, and the one that reaches
        ``max_requests_per_connection``.
        """
        limit = self._config.max_requests_per_connection
        shared = self._shared
        return (
            keep_alive
            and not (self.close_after and not self.queue)
            # last_while_draining(), inline on the hot path
            and not (
                (shared.draining or shared.shutdown_pending)
                and not self.queue
                and not self.begun_before_drain()
            )
            and (limit == 0 or self.served + 1 < limit)
            and not unread
        )

    # --- input ------------------------------------------------------------------------

    def receive(self, data: bytes | memoryview, now: float, clock: float) -> list[tuple[int, Any]]:
        """Parse one read; return the actions it calls for (a list the next call reuses).

        Args:
            data: The bytes read.
            now: The glue's time, in seconds, for deadlines.
            clock: ``time.monotonic()``, stamped on requests that begin in ``data``.

        A read larger than ``FEED_SLICE`` goes to the parser a slice at a time; once
        ``PIPELINE_DEPTH`` requests are queued the rest is kept (without a copy) and a
        ``PAUSE`` returned, and :meth:`resume` parses it later. After :attr:`stopped`,
        input is discarded.
        """
        actions = self._actions
        if not self._slicing:  # a read (not a slice of one, fed by _parse)
            if actions:
                actions.clear()
            if self.phase is LINGER or self.stopped:
                return actions
            self._now = now
            self._clock = clock
            if self.kept is not None:  # reading paused with bytes waiting: they go first
                self.kept = bytes(self.kept) + data
                return actions
            if len(data) > FEED_SLICE:
                self._parse(memoryview(data))
                return actions
        # One slice: feed it, then check what the parser holds.
        in_message, begun = self.in_message, self._messages_begun
        in_body = self.phase is BODY
        self._url_in_read = False
        self._chunk_seen = False
        body_before = self.body_bytes if in_body else 0
        try:
            parser = self._parser
        except AttributeError:  # a new connection, or one that shed it while idle (see shed)
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
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
            if in_body and self.phase is BODY and self._te_count and self._messages_begun == begun:
                # All of ``data`` was the chunked content of one message (content and its
                # framing): it was in its content before and after, and no message began
                # in between. A read that spans a message boundary is not counted, since
                # the parser does not say where the boundary lies; Content-Length content
                # has no framing to count.
                self._body_raw += len(data)
                if self._body_raw > 2 * self.body_bytes + CHUNK_OVERHEAD_SLACK:
                    self._fail(policy.chunk_overhead(self._body_raw, self.body_bytes))
                    return actions
            if self._te_count and self.phase is BODY:
                if self._chunk_seen and self._chunk_open:
                    self._check_chunk_size(data)
                    if self.stopped:
                        return actions
                self._ended_line = data[-1:] == b"\n"
            if (
                in_body
                and self.body_bytes != body_before
                and self.phase is BODY
                and self._messages_begun == begun
            ):
                self._body_progress()
            if self.in_head:
                self._check_head(data, in_message, begun)
        return actions

    def resume(self, now: float, clock: float) -> list[tuple[int, Any]] | None:
        """Parse what was kept unparsed, if anything; ``None`` when nothing was kept.

        Called by the glue when the queue has emptied (responses went out).
        """
        unparsed = self.kept
        if unparsed is None:
            return None
        self.kept = None
        actions = self._actions
        if actions:
            actions.clear()
        self._now = now
        self._clock = clock
        self._parse(memoryview(unparsed))
        return actions

    def stop(self) -> None:
        """Parse no more (an error answered, a close announced): input is discarded."""
        self.stopped = True
        self.kept = None
        self.in_head = False
        if self.phase is HEAD or self.phase is BODY:
            self.enter(HANDLING, INF)

    def release(self, size: int) -> None:
        """``size`` content bytes of this connection's requests left memory: free them."""
        held = min(size, self.held)
        if held:
            self.held -= held
            self._shared.body_bytes -= held

    def _parse(self, data: memoryview) -> None:
        """Feed ``data`` to the parser a slice at a time, while the queue has room.

        Content of a known length goes in one slice, so an upload costs no more parser
        calls than reads.
        """
        size = len(data)
        start = 0
        self._slicing = True
        try:
            while start < size:
                if self.stopped or self.phase is LINGER:
                    tail = self._upgrade_tail
                    if tail is not None:  # after an Upgrade request: the next protocol's
                        tail.append(data[start:])
                    return
                if len(self.queue) >= PIPELINE_DEPTH:
                    self.kept = data[start:]
                    self._actions.append((PAUSE, None))
                    return
                end = start + FEED_SLICE
                if self.phase is BODY and not self._te_count:
                    end = max(end, start + self._content_length - self.body_bytes)
                self.receive(data[start:end], self._now, self._clock)
                start = end
        finally:
            self._slicing = False

    def _check_head(self, data: bytes | memoryview, in_message: bool, begun: int) -> None:
        """After a slice that ended inside a header section: HTTP/0.9, and its raw size."""
        head = data if isinstance(data, bytes) else bytes(data)  # a slice of a read
        if not self._url:  # still in the method: keep its bytes
            self._method_start = self._request_start(head, in_message, begun)
        elif (
            not self.raw_headers
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
            # client, which sends no header section and waits. (A newline at the end of
            # ``data`` is this request's: it began before it.) llhttp reports the previous
            # request's version until it reads a new one, so on a reused connection the
            # line's own bytes decide.
            self._fail(policy.http_0_9())
            return
        # Whether this read stopped right after the target (a CR aside): then a newline
        # alone in the next read ends an HTTP/0.9 line.
        url = self._url
        self._target_ended = (
            self._url_in_read
            and bool(url)
            and not self.raw_headers
            and head.rstrip(b"\r").endswith(url[-1])
        )
        # What the parser holds of this header section: every byte since it began (all of
        # ``data`` when it began in ``data``: at most one slice too many).
        if self._messages_begun != begun:
            self._raw_head_bytes = len(data)
        else:
            self._raw_head_bytes += len(data)
        limit = self._config.max_header_bytes
        if self._raw_head_bytes > limit + HEAD_FRAMING_SLACK + FEED_SLICE:
            self._fail(policy.header_too_large(self._raw_head_bytes, limit))

    def _check_chunk_size(self, data: bytes | memoryview) -> None:
        """Refuse a chunk whose declared size passes ``max_body_bytes``, at its header.

        The parser does not report a chunk's size, so it is read back from ``data``: the
        chunk is still open at the end of the slice, so its size line ends just before the
        ``body_bytes - _chunk_at`` bytes of its data that came in this slice. Only a line
        that began in this slice (after a LF in it, or at its start when the slice before
        ended with one) is read; one split across reads is left to the count of what
        arrives. The parser has already accepted its hex digits.
        """
        after = self.body_bytes - self._chunk_at
        end = len(data) - after
        raw = bytes(data[max(0, end - 256) : end])  # a size line and the one before it
        newline = raw.rfind(b"\n", 0, len(raw) - 1)
        if newline < 0 and not (end <= 256 and self._ended_line):
            return  # it began in an earlier slice
        line = raw[newline + 1 :].rstrip(b"\r\n").split(b";", 1)[0].strip(b" \t")
        try:
            size = int(line, 16)
        except ValueError:  # pragma: no cover - llhttp accepted only hex digits
            return
        limit = self._config.max_body_bytes
        if self._chunk_at + size > limit:
            self._fail(policy.body_too_large(self._chunk_at + size, limit, declared=True))

    def on_chunk_header(self) -> None:
        """A chunk's size line was parsed (its size is read back in _check_chunk_size)."""
        self._chunk_seen = self._chunk_open = True
        self._chunk_at = self.body_bytes

    def on_chunk_complete(self) -> None:
        """A chunk's data and its CRLF were parsed."""
        self._chunk_open = False

    def _fail(self, error: ProtocolError) -> None:
        self.stop()
        self._actions.append((FAIL, error))

    def _on_upgrade(self, data: bytes | memoryview, offset: int) -> None:
        """An Upgrade (or CONNECT) request was parsed, ending at ``offset`` in ``data``."""
        request = self.queue[-1][0] if self.queue else None
        tail = self._upgrade_tail = [memoryview(data)[offset:]] if offset < len(data) else []
        self.stop()
        self._actions.append((UPGRADE, (request, tail)))

    def _request_start(self, data: bytes, in_message: bool, begun: int) -> bytes | None:
        """The first bytes of the request being parsed, while its method is read.

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

    def request_so_far(self) -> Request | None:
        """A request built for the log line of a refusal that came before its Request was.

        From the message being parsed: its method, its request target (as much as arrived,
        for a 414) and the header fields read so far; for a method the parser refused, the
        method and target from the request line's first bytes. ``None`` when no target
        arrived (the request line was refused before it, or no request began).
        """
        if self._parsing is not None:
            return self._parsing
        if not self.in_message:
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
            list(self.raw_headers),
            client=self.client,
            http_version=self._parser.get_http_version(),
            proxy=self._shared.proxy,
        )

    # --- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        """First byte of a request: reset per-message state, start its header deadline."""
        self.in_message = True
        self._messages_begun += 1
        self.in_head = True
        self.head_request = False
        self._url = []
        self._url_bytes = 0
        self._url_in_read = False  # this request's target: none of it read yet
        self.raw_headers = []
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._host_count = 0
        self._host = b""
        self._te_count = 0
        self._expect = None
        self._content_length = -1
        self._body = []
        self.body_bytes = 0
        self.started = self._clock
        phase = self.phase
        if phase is not HEAD:  # a later request on this connection: from its first byte
            if HEAD not in ALLOWED[phase]:  # the table, without a call on the hot path
                check_transition(phase, HEAD)
            self.phase = HEAD
            self.read_deadline = self._now + self._config.headers_timeout

    def on_url(self, url: bytes) -> None:
        """A piece of the request target (llhttp may split it across reads)."""
        if not url:
            # llhttp reports an empty piece at the start of the read after the one that
            # ended inside the target: the target ended before this read, not in it.
            return
        if not self._url:  # the method is parsed: an error answer to HEAD has no content
            self.head_request = self._parser.get_method() == b"HEAD"
        self._url.append(url)
        self._url_bytes += len(url)
        self._url_in_read = True
        if self._url_bytes > self._config.max_target_bytes:
            raise policy.uri_too_long(b"".join(self._url), self._config.max_target_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        """One complete header field (or trailer field after the content)."""
        size = len(name) + len(value) + 4
        config = self._config
        if not self.in_head:  # a trailer field: counted against the same budget, dropped
            self._head_bytes += size
            if self._head_bytes > config.max_header_bytes:
                raise policy.header_too_large(self._head_bytes, config.max_header_bytes)
            return
        headers = self.raw_headers
        headers.append((name, value))
        self._head_bytes += size
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
        self.in_head = False
        parser = self._parser
        config = self._config
        version = parser.get_http_version()
        # The version, the method and Host (policy's check_version, method_name and
        # check_host, which raise; tested here first without a call on the hot path).
        if version != "1.1" and version != "1.0":
            policy.check_version(version)
        raw_method = parser.get_method()
        method = KNOWN_METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        if method not in config.allowed_methods:
            policy.method_name(raw_method, config.allowed_methods)
        host = self._host
        # (A keep-alive connection sends the same Host each time: matched once.)
        if self._host_count != 1 or (
            host != self._host_checked and HOST_VALUE.fullmatch(host) is None
        ):
            policy.check_host(self._host_count, host, version)
        self._host_checked = host
        if self._te_count:
            policy.check_transfer_coding(self._te_count, self._transfer_encoding, version)
        url = self._url
        target = url[0] if len(url) == 1 else b"".join(url)
        path, query = split_target(target)
        shared = self._shared
        hosts = shared.allowed_hosts
        if hosts and path not in config.probe_paths:
            authority = policy.request_authority(target, self._host)
            if not hosts.allows(authority):
                raise policy.host_not_allowed(authority)
        if self.over_limit and path not in config.probe_paths:
            raise policy.too_many_connections(config.max_connections)
        length = self._content_length
        if length > config.max_body_bytes:
            raise policy.body_too_large(length, config.max_body_bytes, declared=True)
        has_content = length > 0 or self._te_count > 0
        if (
            not self._streaming
            and length > 0
            and (shared.body_bytes + length > self._body_buffer_limit)
        ):
            raise policy.body_buffer_full(shared.body_bytes, self._body_buffer_limit)
        expect_continue = has_content and policy.expects_continue(self._expect, version)
        make = self._make_request
        stream = self._stream_message = self._streaming
        if expect_continue and not stream:
            make = self._make_deferred
            stream = self._stream_message = True
        request = self._parsing = make(
            method,
            target,
            path,
            query,
            self.raw_headers,
            client=self.client,
            http_version=version,
            scheme=self._scheme,
            proxy=shared.proxy,
        )
        keep_alive = self._keep_alive = parser.should_keep_alive()
        if stream:
            self._actions.append((HEAD_DONE, (request, has_content, expect_continue)))
            if has_content:
                self._start_body()
                self.queue.append((request, keep_alive, self.started))
            else:
                self.enter(HANDLING, INF)
            return
        if has_content:
            self._start_body()
        else:
            if HANDLING not in ALLOWED[self.phase]:  # the table, without a call
                check_transition(self.phase, HANDLING)
            self.phase = HANDLING
            self.read_deadline = INF

    def _start_body(self) -> None:
        """The header section announced content: start its deadlines."""
        now = self._now
        self._body_raw = 0
        self._body_started = self._body_last = now
        self.enter(BODY, now + self._config.body_timeout)

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
        now = self._body_last = self._now
        deadline = policy.body_deadline(
            self._body_started, now, self.body_bytes, config.body_timeout, config.body_min_rate
        )
        if self.read_deadline == INF:  # held: runs on from here when reading resumes
            self._read_time_left = max(0.0, deadline - now)
        else:
            self.read_deadline = deadline

    def on_body(self, body: bytes) -> None:
        """A piece of the content (already de-chunked by the parser).

        Content is counted against the per-request limit and against the server-wide
        budget for buffered content, so many uploads at once cannot exhaust memory.
        """
        size = len(body)
        self.body_bytes += size
        config = self._config
        if self.body_bytes > config.max_body_bytes:
            raise policy.body_too_large(self.body_bytes, config.max_body_bytes, declared=False)
        shared = self._shared
        shared.body_bytes += size
        self.held += size
        if shared.body_bytes > self._body_buffer_limit:
            raise policy.body_buffer_full(shared.body_bytes - size, self._body_buffer_limit)
        if self._stream_message:
            self._actions.append((BODY_PIECE, body))
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        """The request is whole: queue it (buffered mode) or end its content (streaming)."""
        self.in_message = False
        request = self._parsing
        if request is None:  # pragma: no cover - llhttp always calls headers_complete first
            return
        self._parsing = None
        phase = self.phase
        if HANDLING not in ALLOWED[phase]:  # the table, without a call on the hot path
            check_transition(phase, HANDLING)
        self.phase = HANDLING
        self.read_deadline = INF
        queue = self.queue
        if self._stream_message and phase is BODY:  # queued when its header section ended
            self._actions.append((END, request))
        else:
            body = self._body
            if body:
                request._body = body[0] if len(body) == 1 else b"".join(body)
                self._body = []
            queue.append((request, self._keep_alive, self.started))
        if self.busy or len(queue) > 1:
            self._actions.append((PAUSE, None))
