"""One client connection: the asyncio glue between a socket and its HTTP/1.1 core.

:class:`HttpProtocol` feeds each read, with the loop's time, to the connection's sans-I/O
:class:`~nessen.server.h1.connection.H1Connection` and carries out the actions it returns;
it starts the requests the core queues, in order (RFC 9112 §9.3.2), each carried by the
connection's :class:`~nessen.server.exchange.Exchange` (handler, response, report), and
owns the transport: reading paused and resumed, the lingering close, the hand-over after
a 101, and the deadlines the server's ticker finds passed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from nessen.errors import ProtocolError
from nessen.http import Request, Response
from nessen.http.forwarded import UNIX_PEER
from nessen.http.request import CLIENT_DISCONNECTED
from nessen.http.response import SwitchingProtocols
from nessen.server.body import DeferredRequest, StreamedRequest
from nessen.server.exchange import Exchange
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
from nessen.server.h1.framing import ResponseError, error_answer, switching_head
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

    What the bytes mean (parsing, limits and their 4xx/5xx, read phases and deadlines,
    the pipelining queue, keep-alive and drain decisions) is decided by :attr:`core`,
    which does no I/O; a request's life is :attr:`exchange`'s; writing and its flow
    control are :class:`~nessen.server.output.Output`'s. This class carries their
    decisions to the transport.
    """

    __slots__ = (
        "_eof",
        "_loop",
        "_out",
        "_pending_error",
        "_queue",
        "_reading_paused",
        "_state",
        "_switched_to",
        "_upgrade_request",
        "_upgrade_tail",
        "client",
        "closed",
        "core",
        "exchange",
        "transport",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._loop = state.loop
        self.core = H1Connection(
            state.config,
            state,
            streaming=state.stream_bodies,
            make_request=StreamedRequest if state.stream_bodies else Request,
            make_deferred=None if state.stream_bodies else DeferredRequest,
            scheme=state.scheme,
        )
        """The connection's sans-I/O core: parsing, limits, phases, the request queue."""
        self._queue = self.core.queue
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.closed = False  # lost, or handed over after a 101
        self._eof = False
        self._reading_paused = False
        self._pending_error: ProtocolError | None = None  # answered after the queue
        self._upgrade_request: Request | None = None  # the request that asked to upgrade
        self._upgrade_tail: list[memoryview] | None = None  # the bytes read after it
        self._switched_to: Any = None  # the asyncio.Protocol a 101 handed over to
        # What went out: flow control, the send deadline, what a cut loses.
        self._out = Output(state.loop, state.config)
        self.exchange = Exchange(self, state, self.core, self._out)
        """The request being handled: its handler, response and report."""

    @property
    def read_phase(self) -> Phase:
        """The core's read phase (what :attr:`read_deadline` guards)."""
        return self.core.phase

    @property
    def read_deadline(self) -> float:
        """When the read phase's deadline passes, in ``loop.time()`` seconds (INF: none)."""
        return self.core.read_deadline

    @property
    def handler_deadline(self) -> float:
        """When ``request_timeout`` passes for the running handler (``loop.time()`` s)."""
        return self.exchange.deadline

    @property
    def write_deadline(self) -> float:
        """When ``send_timeout`` passes with output queued, in ``loop.time()`` seconds."""
        return self._out.deadline

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection, start its header deadline, or refuse it when full."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._out.attach(transport, tls=self._state.tls is not None)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            # Interned: connections from one address (a load balancer, a proxy) share it.
            self.client = self.core.client = (sys.intern(str(peer[0])), int(peer[1]))
        elif isinstance(peer, str | bytes):  # a Unix socket's peer: a local process
            self.client = self.core.client = (UNIX_PEER, 0)
        state = self._state
        state.connections.add(self)
        over = len(state.connections) + len(state.websockets) - state.config.max_connections
        # Past the limit, kept only if it turns out to be a probe.
        self.core.open(self._loop.time(), draining=state.draining, over_limit=over > 0)
        if over > PROBE_RESERVE:
            self._refuse(policy.too_many_connections(state.config.max_connections))

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a running handler finishes but its response is dropped."""
        self.closed = True
        self.core.read_deadline = self.exchange.deadline = INF
        self._out.lost(exc)
        self._output_settled()
        self._state.connections.discard(self)
        self.exchange.close_channels()
        if self.core.held:
            self.core.release(self.core.held)
        self._state.check_idle()

    def eof_received(self) -> bool | None:
        """The client shut its write side: finish what is queued, then close."""
        self._eof = True
        ex = self.exchange
        if self._state.stream_bodies or ex.body_request is not None:
            # As a lost connection: a streaming handler cannot tell a half-close from a
            # close (nor can we, short of writing), and ASGI servers report both as
            # http.disconnect. Content already received is still read; what is queued is
            # still answered.
            body_request, current = ex.body_request, ex.current
            ex.close_channels()
            if body_request is not None and current is not None and current[0] is body_request:
                # It left in the middle of the content of the request being handled: that
                # request cannot be completed, and whatever the app answers now would go
                # to a client that is gone.
                self._out.abort(CLIENT_DISCONNECTED, lost=self.closed)
                return None
        if self.core.phase is not LINGER and (ex.busy or self._queue):
            self.core.close_after = True
            # Keep the transport open to write the pending responses; TLS closes anyway
            # (its close_notify ends both directions, and asyncio cannot keep it half-open).
            return True if self._state.tls is None else None
        return None

    def pause_writing(self) -> None:
        """Output stays queued (the kernel's buffer is full): stop producing more."""
        self._out.on_paused()

    def resume_writing(self) -> None:
        """All output went to the kernel: report a response that waited, resume writing."""
        self._out.on_resumed()
        self._output_settled()
        if not self.exchange.busy:
            self.process_queue()

    def _output_settled(self) -> None:
        """Output went out or was lost: report a response that waited, wake a stream."""
        if self._out.pending is not None:
            self.exchange.report_pending()
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
        if not self.exchange.busy and core.queue:
            self.process_queue()
        if self._reading_paused:  # for the queue: the request begun in ``data`` waits too
            core.hold(loop_now)

    def _carry_out(self, actions: list[tuple[int, Any]]) -> None:
        """Do what the core asked for, in order (see :mod:`nessen.server.h1.connection`)."""
        ex = self.exchange
        for kind, value in actions:
            if kind == HEAD_DONE:
                ex.start_content(*value)
            elif kind == BODY_PIECE:
                ex.feed(value)
            elif kind == END:
                ex.content_ended()
            elif kind == PAUSE:
                self.pause_reading()
            elif kind == FAIL:
                self._fail(value)
            elif kind == UPGRADE:
                self._on_upgrade(*value)

    # --- the transport ---------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Read no more for now (requests wait their turn, or a content channel is full)."""
        if not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True

    def resume_reading(self) -> None:
        """Read again, if reading was paused and the connection is still ours."""
        if self._reading_paused and not self.closed and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes | tuple[bytes, bytes]) -> None:
        """Write ``data`` (one buffer, or a head and a large body) unless the connection ended."""
        transport = self.transport
        if transport is None or self.closed:
            return
        if isinstance(data, tuple):
            transport.writelines(data)
        else:
            transport.write(data)

    def close(self) -> None:
        """Close the transport (a FIN once the output is written), if still open."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def linger(self) -> None:
        """Shut our write side and drain input briefly, so the client reads our answer.

        Closing at once with unread input in the socket would send a RST that can destroy
        the response in the client's receive buffer (RFC 9112 §9.6). The linger ends when
        the client closes too, or after ``LINGER_SECONDS``; a client that has already shut
        its write side has nothing left to drain, so that connection closes at once.
        """
        transport = self.transport
        assert transport is not None
        self._upgrade_tail = None  # not switching: what followed an Upgrade is discarded
        if transport.is_closing():
            return
        if self._eof:
            transport.close()
            return
        self.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self.core.linger(self._loop.time())
        else:  # TLS: close_notify, then close (asyncio's TLS cannot half-close)
            transport.close()

    # --- the queue -------------------------------------------------------------------------

    def parse_kept(self) -> None:
        """Parse what the core kept unparsed, now, and carry out what it calls for.

        For the request just started whose content was cut where parsing stopped (it
        filled the queue): its handler would otherwise wait for content that is only
        parsed once it is done.
        """
        actions = self.core.resume(self._loop.time(), time.monotonic())
        if actions:
            self._carry_out(actions)

    def process_queue(self) -> None:
        """Start queued requests in order while each completes at once.

        When the queue empties, bytes the core kept unparsed are parsed next and the
        requests they hold started in turn; then reading resumes, or the connection closes
        if the core says so (``close_after``, or a drain with nothing begun before it).
        """
        queue, ex, core = self._queue, self.exchange, self.core
        while True:
            while queue and not ex.busy and not self.closed:
                if self._out.paused:
                    return  # resume_writing() calls back
                request, keep_alive, started = queue.pop(0)
                ex.dispatch(request, keep_alive, started)
            if ex.busy or self.closed:
                return
            if core.kept is None:  # nothing read and left unparsed
                break
            self.parse_kept()
        if ex.busy or self.closed:
            return
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            self._refuse(error)
            return
        if core.close_after:
            if core.phase is not LINGER:  # a lingering close ends on its own deadline
                self.linger()
            return
        if self._state.draining and not core.begun_before_drain():
            # Its last response is out, and nothing that began before the drain is still
            # arriving: close rather than wait idle. (A response whose head went out before
            # the drain, such as a long stream, did not say close: nothing else would end
            # this connection.)
            core.close_after = True
            self._stop_parsing()
            self.linger()
            return
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
            core.release_hold(self._loop.time())
        core.idle(self._loop.time())

    def announce_close(self) -> None:
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

    def _stop_parsing(self) -> None:
        self.exchange.drop_content()
        self.core.stop()

    # --- errors ---------------------------------------------------------------------------

    def _fail(self, error: ProtocolError) -> None:
        """A protocol error while parsing: answer it once earlier responses are out.

        In streaming mode the request whose content failed (413, 408, bad chunking) may be
        in its handler already: the exchange answers it (see ``content_failed``). If it
        still waits in the queue it is dropped from it, and the error answered in its place.
        """
        ex = self.exchange
        body_request = ex.body_request
        self._stop_parsing()
        if body_request is not None:
            current = ex.current
            if current is not None and current[0] is body_request:
                ex.content_failed(body_request, error)
                return
            queue = self._queue
            kept = [entry for entry in queue if entry[0] is not body_request]
            queue.clear()
            queue.extend(kept)
        if ex.busy or self._queue:
            self._pending_error = error
            if not ex.busy:
                # Requests queued in the read that failed and not started yet: start them
                # now. Nothing else would (parsing has stopped, so no read comes to do it,
                # and no deadline is armed), and the connection would hang open forever.
                self.process_queue()
            return
        self._refuse(error)

    def _refuse(self, error: ProtocolError) -> None:
        """Send the server's error answer for the request being read, then linger and close."""
        self._stop_parsing()
        core, state = self.core, self._state
        core.close_after = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data, _ = error_answer(
            error.status,
            error.reason,
            fixed_fields=state.fixed_fields,
            cors=state.events.error_fields(core.raw_headers),  # the fields read so far
            retry_after=error.status == 503,
            head=core.head_request,
        )
        transport.write(data)
        state.events.request_rejected(
            error.reason, error.status, str(error), self.client, core.request_so_far()
        )
        self.linger()

    # --- Upgrade and 101 -------------------------------------------------------------------

    def _on_upgrade(self, request: Request | None, tail: list[memoryview]) -> None:
        """An Upgrade (or CONNECT) request was parsed; ``tail`` is what was read after it.

        What follows belongs to the protocol the client asked for: it is kept, as the
        memoryviews read, for a handler that answers with
        :meth:`Response.switching_protocols <nessen.http.Response.switching_protocols>`
        (see :meth:`switch`). A handler that answers anything else is served normally and
        the connection then closed (RFC 9110 §7.8 lets a server ignore Upgrade).
        """
        self._upgrade_request = request
        self._upgrade_tail = tail
        self.core.close_after = True
        self._stop_parsing()
        self.pause_reading()  # until the handler has answered: held, not read on
        if not self.exchange.busy and self._queue:
            self.process_queue()

    def switch(self, request: Request, response: Response, started: float) -> None:
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
        head = switching_head(self._state.fixed_fields, response, response.protocol)
        try:
            protocol = response.protocol_factory()
        except Exception as exc:
            raise ResponseError(f"the 101's protocol factory failed: {exc!r}") from exc
        transport = self.transport
        assert transport is not None
        self.exchange.answered = True
        transport.write(head)
        self.exchange.report(request, response, 101, 0, None, started)
        # HTTP is over on this connection: forget it, and let the new protocol read.
        tail, self._upgrade_tail = self._upgrade_tail or [], None
        self.closed = True
        self.core.read_deadline = self.exchange.deadline = self._out.deadline = INF
        state = self._state
        state.connections.discard(self)
        state.adopt_upgraded(transport)
        adopted = getattr(protocol, "adopted", None)
        if adopted is not None:  # a protocol that reports to the server (a WebSocket)
            adopted(state)
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

    # --- deadlines and the drain (called by the server) -----------------------------------

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
                f"no request within {self._state.config.headers_timeout:g} s (headers_timeout)",
                self.client,
                None,
            )
            self.close()
        elif phase is IDLE or phase is LINGER:
            self.close()

    def on_handler_timeout(self) -> None:
        """The handler overran ``request_timeout``: see :meth:`Exchange.on_timeout`."""
        self.exchange.on_timeout()

    def on_write_timeout(self) -> None:
        """``send_timeout`` passed with output queued: go on if the client keeps up, else reset.

        See :meth:`Output.send_deadline_passed <nessen.server.output.Output.send_deadline_passed>`
        for the rule, and :meth:`~nessen.server.output.Output.reset` for why a reset.
        """
        out = self._out
        verdict = out.send_deadline_passed(lost=self.closed)
        if verdict is None:
            return
        reason, detail = verdict
        current, pending = self.exchange.current, out.pending
        request = current[0] if current else pending[0] if pending else None
        self._state.events.request_rejected(reason, 0, detail, self.client, request)
        out.reset(lost=self.closed)

    def on_drain(self) -> None:
        """The server is draining: close now if idle past its grace, else let the core decide.

        See :meth:`H1Connection.drain <nessen.server.h1.connection.H1Connection.drain>`:
        an idle keep-alive connection closes after ``DRAIN_IDLE_GRACE``, a fresh one after
        ``DRAIN_FRESH_GRACE``; a request that arrives within its grace is served with
        ``Connection: close``.
        """
        verdict = self.core.drain(self._loop.time(), self.core.served)
        if verdict == CLOSE:
            self.close()

    @property
    def lingering(self) -> bool:
        """Whether only the lingering close is left: closing now loses nothing.

        Every response is written out of our buffer and no handler runs; the connection
        waits only for the client's FIN.
        """
        transport = self.transport
        return (
            self.read_phase is LINGER
            and not self.exchange.busy
            and not self.closed
            and transport is not None
            and transport.get_write_buffer_size() == 0
        )

    def end_linger(self) -> None:
        """Drain deadline passed during the lingering close: close now (not a cut)."""
        self.core.read_deadline = INF
        self.close()

    def cut(self) -> bool:
        """Drain deadline passed: see :meth:`Exchange.cut`. Returns whether a request was cut."""
        return self.exchange.cut()
