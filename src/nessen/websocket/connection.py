"""One WebSocket connection on the server's own socket: RFC 6455 after the ``101``.

:class:`WebSocketConnection` is the ``asyncio.Protocol`` an HTTP connection is handed to
by a ``101 Switching Protocols`` (see :meth:`Response.switching_protocols
<nessen.http.Response.switching_protocols>`). The frames are parsed and built by the
sans-I/O layer of ``websockets`` (``websockets.protocol.Protocol``: framing, masking,
control frames, the closing handshake, close codes, permessage-deflate with the
decompressed size bounded); this module owns what a server must add around it:

- messages put together from fragments, text checked as UTF-8 as it arrives (close 1007);
- flow control both ways: at ``ws_receive_queue`` unread messages the socket is no
  longer read; above ``ws_send_buffer_bytes`` of unsent output the app's ``send`` waits,
  and a client that takes nothing for ``send_timeout`` is cut;
- keep-alive pings every ``ws_ping_interval`` (a peer that does not answer within
  ``ws_ping_timeout`` is cut as dead), the idle timeout, and a bound on the closing
  handshake (``ws_close_timeout``);
- the drain: :meth:`going_away` sends 1001 to every open WebSocket;
- the report of each WebSocket when it ends (messages and bytes each way, close code,
  who closed) through the server's events, for the access log and the metrics.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import struct
import typing
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from websockets.extensions.base import Extension
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.speedups import apply_mask

from nessen.http import Request, Response, SwitchingProtocols
from nessen.websocket.handshake import Offer, accept_fields, negotiate_deflate
from nessen.websocket.types import Message, WebSocketDisconnect, WebSocketSettings


class ServerSide(typing.Protocol):
    """What a connection needs of the server that hands it over (``ServerState`` has it)."""

    websockets: set[Any]
    draining: bool
    events: Any

    def check_idle(self) -> None: ...  # noqa: D102


logger = logging.getLogger("nessen.websocket")

TEXT, BINARY, CONT, PING, PONG, CLOSE = (
    Opcode.TEXT,
    Opcode.BINARY,
    Opcode.CONT,
    Opcode.PING,
    Opcode.PONG,
    Opcode.CLOSE,
)
OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED
ABNORMAL = 1006
YIELD_BYTES = 64 * 1024
"""Bytes ``send`` may write without yielding to the event loop (see :meth:`send`)."""
"""RFC 6455 §7.1.5: the code recorded when a connection ended without a close frame."""
INF = float("inf")
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_NO_PARTS: list[Any] = []
"""A WebSocket's parts between fragmented messages: shared, never appended to (a
fragmented message starts a list of its own)."""
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' protocol logger, without its per-connection info lines."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level != logging.INFO:
            super().log(level, msg, *args, **kwargs)


_protocol_log = _QuietLog(logging.getLogger("nessen.websocket.protocol"), {})
_PROTOCOL_ID = uuid.UUID(int=0)
"""Every protocol's ``id``: websockets gives each its own uuid4, which only its logs read."""
_NONE_OFFERED: list[tuple[str, list[tuple[str, str | None]]]] = []
"""The extension offers of an answered offer (never changed)."""
_NOTHING_OFFERED = Offer("", (), None, _NONE_OFFERED)
"""An answered offer that asked for no subprotocol: what an open WebSocket keeps of it."""
_done: asyncio.Future[Any] | None = None


def _done_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """A future of ``loop`` whose result is ``None``, shared by every open WebSocket on it.

    Made again when the loop changes (tests run many loops; a server, one).
    """
    global _done
    done = _done
    if done is None or done.get_loop() is not loop:
        done = _done = loop.create_future()
        done.set_result(None)
    return done


class _ServerProtocol(Protocol):
    """websockets' sans-I/O protocol, except for a close frame between two fragments.

    RFC 6455 §5.4 lets control frames come between the fragments of a message, the close
    frame included: the message is then abandoned and the close answered as any other
    (Autobahn case 7.1.5). websockets answers it with 1002 instead.
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is CLOSE:
            self.current_size = None  # the unfinished message is dropped, not an error
        super().recv_frame(frame)


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket, from its accepted handshake to its end; the connection's protocol.

    Made for a valid handshake (an :class:`~nessen.websocket.handshake.Offer`) before the
    ``101``. The app's side accepts it (:meth:`accept`, which yields the
    :class:`~nessen.http.SwitchingProtocols` the HTTP handler returns through
    :attr:`decision`) or refuses it (:meth:`refuse`, an HTTP answer). Once the server wrote
    the ``101`` it hands the transport over (:meth:`adopted`, ``connection_made``), and
    :meth:`receive`, :meth:`send` and :meth:`close` work until the connection ends.

    Attributes:
        request: The upgrade request (its id, path, params, headers, client address).
        offer: What the handshake asked for.
        subprotocol: The subprotocol accepted, or ``None``.
        close_code: The close code once the WebSocket ended (1006: no closing handshake).
        close_reason: The close reason, possibly empty.
        closed_by: ``"client"`` or ``"server"``: which side started the close.
        messages_in, messages_out, bytes_in, bytes_out: Messages and their payload bytes
            (after decompression) each way.
    """

    __slots__ = (
        "_close_timer",
        "_decoder",
        "_extension",
        "_finished",
        "_frame_limit",
        "_handler_timer",
        "_idle_timer",
        "_inbox",
        "_kind",
        "_lost",
        "_opened",
        "_parts",
        "_pending",
        "_pending_need",
        "_ping_at",
        "_ping_payload",
        "_pong_by",
        "_reading_paused",
        "_receiver",
        "_reported",
        "_state",
        "_unyielded",
        "_writable",
        "_writing_paused",
        "bytes_in",
        "bytes_out",
        "close_code",
        "close_reason",
        "closed_by",
        "cut_reason",
        "decision",
        "handler_task",
        "last_message",
        "loop",
        "messages_in",
        "messages_out",
        "offer",
        "opened_at",
        "proto",
        "request",
        "settings",
        "subprotocol",
        "transport",
    )

    def __init__(
        self, request: Request, offer: Offer, settings: WebSocketSettings | None = None
    ) -> None:
        self.request = request
        self.offer = offer
        self.settings = settings if settings is not None else WebSocketSettings()
        self.loop = asyncio.get_running_loop()
        self.decision: asyncio.Future[Response] = self.loop.create_future()
        """The HTTP answer: the ``101`` once accepted, or the refusal; once switched, a done
        future whose result is ``None`` (only that it was decided is kept)."""
        self.subprotocol: str | None = None
        self.handler_task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.proto: Protocol | None = None
        self._extension: Extension | None = None
        self._opened: asyncio.Future[Any] = self.loop.create_future()
        self._state: ServerSide | None = None
        # Messages not yet received by the app: made by the first one, let go by the ticker
        # once empty (an empty deque holds 760 bytes).
        self._inbox: deque[Message] | None = None
        self._receiver: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._kind: Opcode | None = None  # the message being put together from fragments
        self._parts: list[Any] = _NO_PARTS  # a fragmented message's parts so far
        self._decoder: Any = None
        self._ping_payload: bytes | None = None
        # Keep-alive deadlines in loop.time() seconds, checked by the server's ticker (see
        # tick): a timer handle each would cost about 600 bytes per WebSocket.
        self._ping_at = INF  # the next ping
        self._pong_by = INF  # the pong to the last ping
        self._idle_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._handler_timer: asyncio.TimerHandle | None = None
        self._pending: bytes | bytearray = b""  # the start of a frame not yet whole
        self._pending_need = 0
        self._unyielded = 0  # bytes sent since this WebSocket's coroutines last yielded
        self._frame_limit = min(self.settings.max_message_bytes, self.settings.max_frame_bytes)
        self._lost = False
        self._finished = False
        self._reported = (0, 0, 0, 0)
        self.opened_at = 0.0
        self.last_message = 0.0
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: str | None = None
        self.cut_reason: str | None = None
        """Why the server cut the connection without a closing handshake, or ``None``."""
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0

    # --- before the 101 ---------------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Accept the handshake: the server writes the ``101``; return once it did.

        Args:
            subprotocol: One of the client's ``Sec-WebSocket-Protocol`` tokens, or ``None``.
            headers: More fields for the ``101``: a mapping or ``(name, value)`` pairs.

        Raises:
            ValueError: ``subprotocol`` was not offered.
            RuntimeError: Already accepted or refused.
            WebSocketDisconnect: 1006: the ``101`` could not be written (the client left,
                the request's deadline passed).
        """
        if self.decision.done():
            raise RuntimeError("this WebSocket was already accepted or refused")
        extension_value, self._extension = negotiate_deflate(self.offer, self.settings.compression)
        fields = accept_fields(self.offer, subprotocol, extension_value, headers)
        self.subprotocol = subprotocol
        self.decision.set_result(SwitchingProtocols(self._take_over, "websocket", headers=fields))
        await self._opened

    def refuse(self, response: Response) -> None:
        """Refuse the handshake with ``response`` (an HTTP answer, e.g. 403).

        Raises:
            RuntimeError: Already accepted or refused.
        """
        if self.decision.done():
            raise RuntimeError("this WebSocket was already accepted or refused")
        self.decision.set_result(response)

    def fail_handshake(self, exc: BaseException) -> None:
        """The app failed before deciding: the HTTP side raises ``exc`` (an error answer)."""
        if not self.decision.done():
            self.decision.set_exception(exc)

    def abandon(self) -> None:
        """The ``101`` was not written after all: :meth:`accept` raises 1006."""
        if not self._opened.done():
            self._opened.set_exception(WebSocketDisconnect(ABNORMAL, "not switched"))
            self._opened.exception()  # retrieved: nobody may be waiting
            self.close_code = ABNORMAL
            self._wake_receiver()
            self._maybe_finish()

    def _take_over(self) -> WebSocketConnection:
        """The ``101``'s protocol factory: this connection."""
        return self

    # --- the transport ------------------------------------------------------------------------

    def adopted(self, state: ServerSide) -> None:
        """The server hands the connection over: count it as an open WebSocket."""
        self._state = state
        state.websockets.add(self)
        state.events.websocket_opened(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        settings = self.settings
        buffer = settings.send_buffer_bytes
        transport.set_write_buffer_limits(high=buffer, low=buffer // 4)
        proto = _ServerProtocol(
            Side.SERVER,
            state=OPEN,
            max_size=(settings.max_message_bytes, settings.max_frame_bytes),
            logger=_protocol_log,
        )
        proto.id = _PROTOCOL_ID  # its own uuid4 (~0.1 KB) names it in logs we do not use
        if self._extension is not None:
            proto.extensions = [self._extension]
        self.proto = proto
        self.opened_at = self.last_message = self.loop.time()
        if settings.ping_interval > 0:
            self._ping_at = self.opened_at + settings.ping_interval
        if settings.idle_timeout > 0:
            self._idle_timer = self.loop.call_later(settings.idle_timeout, self._idle_check)
        opened = self._opened
        if not opened.done():
            opened.set_result(None)  # wakes accept(), whose task holds this future until then
            # From now on _opened is only asked whether it is done (and awaited, which a
            # done future answers at once): the loop's one shared done future says as much
            # and this one goes (~0.15 KB per WebSocket).
            self._opened = _done_future(self.loop)
        # The 101 went out: keep that it was decided, not the answer (its fields and the
        # middleware's, about 1 KiB for as long as the WebSocket is open). _opened, done,
        # says as much.
        self.decision = self._opened
        # Of the offer only the subprotocols are read from now on (ws.subprotocols): the
        # key and the extension offers go (~0.2 KB per WebSocket).
        offered = self.offer.subprotocols
        self.offer = Offer("", offered, None, _NONE_OFFERED) if offered else _NOTHING_OFFERED
        state = self._state
        if state is not None and state.draining:  # accepted while the server drains
            self.going_away()

    def data_received(self, data: bytes | bytearray | memoryview) -> None:  # noqa: D102
        proto = self.proto
        if proto is None or self._lost:
            return
        if self._extension is None and proto.state is OPEN:
            self._receive_frames(proto, data)
        else:
            proto.receive_data(data if type(data) is bytes else bytes(data))
            self._take_events(proto)
        self._flush(proto)

    def _receive_frames(self, proto: Protocol, data: bytes | bytearray | memoryview) -> None:
        """Split ``data`` into whole frames: take the common one here, give the rest whole.

        The common frame, a whole message in one masked text or binary frame within the
        limits, is unmasked and delivered here (websockets' parser would copy it through
        its buffer and a generator). Every other frame (control frames, fragments, reserved
        bits or opcodes, an unmasked frame) goes to websockets' ``Protocol`` whole, so its
        parser is always at a frame boundary and applies every rule; so does the header of
        a frame over the limits (it fails the connection with 1009), and everything after
        the connection stopped being open. A frame not yet whole waits in ``_pending``,
        at most the limit plus its header.
        """
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._pending_need:
                return
            self._pending = b""
            data = pending
        view = memoryview(data)
        end = len(view)
        limit = self._frame_limit
        at = 0
        while at < end:
            if proto.state is not OPEN:
                proto.receive_data(bytes(view[at:]))  # discarded: the connection is closing
                break
            if end - at < 2:
                self._wait_for(view[at:], 2)
                break
            first, second = view[at], view[at + 1]
            length = second & 0x7F
            head = at + 2
            if length >= 126:
                size = 2 if length == 126 else 8
                if end - head < size:
                    self._wait_for(view[at:], 2 + size)
                    break
                length = int.from_bytes(view[head : head + size], "big")
                head += size
            if length > limit:  # websockets fails it with 1009 from its header
                proto.receive_data(bytes(view[at:]))
                self._take_events(proto)
                break
            masked = second & 0x80
            stop = head + (4 if masked else 0) + length
            if stop > end:
                self._wait_for(view[at:], stop - at)
                break
            if (first == 0x81 or first == 0x82) and masked and proto.current_size is None:
                payload = apply_mask(view[head + 4 : stop], bytes(view[head : head + 4]))
                if first == 0x81:
                    try:
                        message: Message = payload.decode()
                    except UnicodeDecodeError:
                        self._invalid_utf8(proto)
                        break
                else:
                    message = payload
                self._kind = None
                self.messages_in += 1
                self.bytes_in += length
                inbox = self._inbox
                if inbox is None:
                    inbox = self._inbox = deque()
                inbox.append(message)
                self._delivered(inbox)
            else:
                proto.receive_data(bytes(view[at:stop]))
                self._take_events(proto)
            at = stop

    def _wait_for(self, tail: memoryview, need: int) -> None:
        """Keep the start of a frame until ``need`` bytes of it have come."""
        self._pending = bytearray(tail)
        self._pending_need = need

    def _delivered(self, inbox: deque[Message]) -> None:
        """Messages were added to the inbox: wake the reader; pause at the queue's bound."""
        self._wake_receiver()
        if self.settings.idle_timeout:
            self.last_message = self.loop.time()
        if len(inbox) >= self.settings.receive_queue and not self._reading_paused:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                self._reading_paused = True
                transport.pause_reading()

    def eof_received(self) -> bool:  # noqa: D102
        proto = self.proto
        if proto is not None:
            proto.receive_eof()
            self._take_events(proto)
            self._flush(proto)
        return False

    def pause_writing(self) -> None:  # noqa: D102
        self._writing_paused = True

    def resume_writing(self) -> None:  # noqa: D102
        self._writing_paused = False
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:  # noqa: D102
        self._lost = True
        self._ping_at = self._pong_by = INF
        for timer in (self._idle_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        proto = self.proto
        if self.close_code is None:
            sent = proto.close_sent if proto is not None else None
            received = proto.close_rcvd if proto is not None else None
            if sent is not None and not (proto is not None and proto.close_rcvd_then_sent):
                # the server closed first (app, drain, idle) or failed it (1002, 1007, 1009)
                self.close_code, self.close_reason = sent.code, sent.reason
                self.closed_by = self.closed_by or "server"
            elif received is not None:
                self.close_code, self.close_reason = received.code, received.reason
                self.closed_by = self.closed_by or "client"
            else:
                self.close_code = ABNORMAL
                self.closed_by = self.closed_by or "client"
        if not self._opened.done():
            self.abandon()
        task = self.handler_task
        if task is not None and not task.done():  # bounded: it holds a MAX_CONNECTIONS slot
            self._handler_timer = self.loop.call_later(
                self.settings.close_timeout, self._cancel_handler
            )
        self._wake_receiver()
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._maybe_finish()

    # --- incoming -----------------------------------------------------------------------------

    def _take_events(self, proto: Protocol) -> None:
        """Turn parsed frames into messages for the app; note pongs and close frames."""
        before = self.messages_in
        for event in proto.events_received():
            frame = cast(Frame, event)  # a server after its handshake gets only frames
            opcode = frame.opcode
            if opcode is TEXT or opcode is BINARY or opcode is CONT:
                if not self._data_frame(proto, opcode, frame.data, frame.fin):
                    break
            elif opcode is PONG:
                if frame.data == self._ping_payload:
                    self._ping_payload = None
                    self._pong_by = INF
            elif opcode is CLOSE and self.closed_by is None:
                self.closed_by = "client"
        inbox = self._inbox
        if self.messages_in != before and inbox is not None:
            self._delivered(inbox)

    def _data_frame(self, proto: Protocol, opcode: Opcode, data: Any, fin: bool) -> bool:
        """Add a data frame to the message being received; False after failing (1007)."""
        if opcode is not CONT:
            self._kind = opcode
            if fin:  # a whole message in one frame: the common case
                try:
                    message: Message = bytes(data).decode() if opcode is TEXT else bytes(data)
                except UnicodeDecodeError:
                    return self._invalid_utf8(proto)
                self._deliver(message, len(data))
                return True
            self._parts = []  # its own: _NO_PARTS is never appended to
            self._decoder = _utf8_decoder() if opcode is TEXT else None
        decoder = self._decoder
        try:
            self._parts.append(decoder.decode(data, fin) if decoder is not None else bytes(data))
        except UnicodeDecodeError:
            return self._invalid_utf8(proto)
        if fin:
            parts, self._parts, self._decoder = self._parts, _NO_PARTS, None
            joined: Message = "".join(parts) if decoder is not None else b"".join(parts)
            self._deliver(joined, sum(len(p) for p in parts))
        return True

    def _deliver(self, message: Message, size: int) -> None:
        self._kind = None
        self.messages_in += 1
        self.bytes_in += size
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)

    def _invalid_utf8(self, proto: Protocol) -> bool:
        self._parts, self._decoder, self._kind = _NO_PARTS, None, None
        self.closed_by = self.closed_by or "server"
        proto.fail(1007, "invalid UTF-8 in a text message")
        return False

    def _wake_receiver(self) -> None:
        waiter, self._receiver = self._receiver, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        """The next message: ``str`` (text) or ``bytes`` (binary).

        Raises:
            WebSocketDisconnect: The WebSocket is closed (after the messages received
                before its close frame were read).
            RuntimeError: Another task is waiting in ``receive`` already (one reader at a
                time: which of two would get a message is not defined), or called before
                :meth:`accept`.
        """
        if self.proto is None:
            await self._until_open("receive")
        while not (inbox := self._inbox):
            if self._ended():
                raise WebSocketDisconnect(self.ending_code(), self.ending_reason())
            if self._receiver is not None:
                raise RuntimeError("another task is already waiting in receive() on this WebSocket")
            waiter = self._receiver = self.loop.create_future()
            self._unyielded = 0
            try:
                await waiter
            finally:
                if self._receiver is waiter:
                    self._receiver = None
        message = inbox.popleft()
        if self._reading_paused and len(inbox) <= self.settings.receive_queue // 2:
            self._reading_paused = False
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        return message

    async def _until_open(self, verb: str) -> None:
        """Before the ``101``: refuse a call the app made too early, or wait for the switch.

        Raises:
            RuntimeError: The handshake is not decided yet: ``accept()`` comes first.
            WebSocketDisconnect: 1006: it was refused, or the ``101`` could not be written.
        """
        if not self.decision.done():
            raise RuntimeError(f"call accept() before {verb}() on a WebSocket")
        await asyncio.shield(self._opened)  # accepted, being switched; or raises 1006

    def ending_reason(self) -> str:
        """The close reason: the recorded one, the client's, or the server's."""
        if self.close_code is not None:
            return self.close_reason
        proto = self.proto
        if proto is not None and proto.close_rcvd is not None:
            return proto.close_rcvd.reason
        if proto is not None and proto.close_sent is not None:
            return proto.close_sent.reason
        return ""

    def _ended(self) -> bool:
        """No message can arrive any more: closed, or the client's close frame came."""
        proto = self.proto
        if self._lost or proto is None:
            return self._lost or self._opened.done()
        return proto.close_rcvd is not None or proto.state is not OPEN

    def ending_code(self) -> int:
        """The close code: the recorded one, the client's, the server's, or 1006."""
        if self.close_code is not None:
            return self.close_code
        proto = self.proto
        if proto is not None and proto.close_rcvd is not None:
            return proto.close_rcvd.code
        if proto is not None and proto.close_sent is not None:
            return proto.close_sent.code
        return ABNORMAL

    # --- outgoing -----------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one message: ``str`` as a text frame, ``bytes``-like as a binary one.

        Returns once the message is queued and the queued output is under
        ``ws_send_buffer_bytes``: when a client reads slower than the app sends, the app
        waits here; a client that takes nothing for ``send_timeout`` is cut.

        Raises:
            WebSocketDisconnect: The WebSocket is closing or closed.
            TypeError: ``message`` is neither text nor bytes.
            RuntimeError: Called before :meth:`accept`.
        """
        proto = self.proto
        if proto is None:
            await self._until_open("send")
            proto = self.proto
        transport = self.transport
        if (
            proto is None
            or self._lost
            or proto.state is not OPEN
            or transport is None
            or transport.is_closing()  # the socket broke: its connection_lost is on its way
        ):
            raise WebSocketDisconnect(self.ending_code(), self.ending_reason())
        if isinstance(message, str):
            payload: bytes | bytearray | memoryview = message.encode()
            first = 0x81
        elif isinstance(message, bytes | bytearray | memoryview):
            payload = message
            first = 0x82
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        size = len(payload)
        if self._extension is None:
            # One unmasked frame (RFC 6455 §5.2), as websockets would build it, in one write.
            if size < 126:
                head = bytes((first, size))
            elif size < 65536:
                head = _HEAD_16.pack(first, 126, size)
            else:
                head = _HEAD_64.pack(first, 127, size)
            transport.write(head + payload)
        else:
            if first == 0x81:
                proto.send_text(payload)
            else:
                proto.send_binary(payload)
            self._flush(proto)
        self.messages_out += 1
        self.bytes_out += size
        if self.settings.idle_timeout:
            self.last_message = self.loop.time()
        if self._writing_paused:
            await self._wait_writable()
        else:
            # A client that reads as fast as the app sends never fills the buffer, so this
            # coroutine would never yield: the loop (other connections, pings, signals, the
            # close of a broken socket) would starve. Let it run every 64 KiB or so.
            self._unyielded += size + 64
            if self._unyielded >= YIELD_BYTES:
                self._unyielded = 0
                await asyncio.sleep(0)

    async def _wait_writable(self) -> None:
        """Wait for the client to take output; cut it after ``send_timeout`` without."""
        while self._writing_paused and not self._lost:
            waiter = self._writable
            if waiter is None:
                waiter = self._writable = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.settings.send_timeout)
            except TimeoutError:
                self.cut("send_timeout", "the client took no output for SEND_TIMEOUT")
        if self._lost:
            raise WebSocketDisconnect(self.ending_code(), self.ending_reason())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason`` (RFC 6455 §7.1.2).

        Returns at once; the connection is cut if the client does not answer within
        ``ws_close_timeout``. Closing a WebSocket that is closing or closed does nothing.

        Raises:
            websockets.exceptions.ProtocolError: ``code`` may not be sent (RFC 6455 §7.4).
        """
        self.start_close(code, reason)

    def start_close(self, code: int, reason: str = "") -> None:
        """Send a close frame now, if the WebSocket is open, and bound the wait for the reply."""
        proto = self.proto
        if proto is None or self._lost or proto.state is not OPEN:
            return
        self.closed_by = self.closed_by or "server"
        proto.send_close(code, reason)
        self._flush(proto)

    def going_away(self) -> None:
        """The server is stopping: close with 1001 (Going Away)."""
        self.start_close(1001, "server shutting down")

    def cut(self, reason: str, detail: str) -> None:
        """Abort the connection now, without a closing handshake; logged with ``detail``."""
        if self._lost or self.cut_reason is not None:
            return
        self.cut_reason = reason
        self.closed_by = self.closed_by or "server"
        if self.close_code is None:
            self.close_code = ABNORMAL
        logger.info(
            "WebSocket cut: %s",
            detail,
            extra={"request_id": self.request.id, "path": self.request.path, "reason": reason},
        )
        transport = self.transport
        if transport is not None:
            transport.abort()

    def _flush(self, proto: Protocol) -> None:
        """Write what the protocol produced; close the socket when it says so."""
        transport = self.transport
        if transport is None or transport.is_closing():
            proto.data_to_send()  # the socket is gone or going: nothing more can be written
            return
        end = False
        for data in proto.data_to_send():
            if data:
                transport.write(data)
            else:
                end = True
        if end:
            transport.close()
        elif proto.state is CLOSING and self._close_timer is None and not self._lost:
            self._close_timer = self.loop.call_later(
                self.settings.close_timeout, self._close_overdue
            )

    def _cancel_handler(self) -> None:
        """The connection closed ``ws_close_timeout`` ago and the handler still runs."""
        task = self.handler_task
        if task is not None and not task.done():
            logger.info(
                "WebSocket handler still running WS_CLOSE_TIMEOUT after its connection "
                "closed: cancelled",
                extra={"request_id": self.request.id, "path": self.request.path},
            )
            task.cancel()

    def _close_overdue(self) -> None:
        self.cut("close_timeout", "the client did not complete the closing handshake")

    # --- timers -------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """The server's ticker (every ``MAX_TICK`` or sooner): a ping or a pong is due.

        ``now`` is ``loop.time()``. Pings go out every ``ws_ping_interval``; a peer whose
        pong has not come ``ws_ping_timeout`` after the ping is cut. An inbox the app has
        emptied is let go.
        """
        if not self._inbox:
            self._inbox = None  # emptied by the app: let it go (made again by a message)
        if now >= self._ping_at:
            self._ping(now)
        elif now >= self._pong_by:
            self._pong_by = INF
            if self._ping_payload is not None and not self._reading_paused and not self._lost:
                self.cut("ping_timeout", "no pong within WS_PING_TIMEOUT: the peer is gone")

    def _ping(self, now: float) -> None:
        """Send a keep-alive ping; cut the peer if the last one is still unanswered."""
        self._ping_at = INF
        proto = self.proto
        if self._lost or proto is None or proto.state is not OPEN:
            return
        settings = self.settings
        if self._ping_payload is not None and not self._reading_paused:
            self.cut("ping_timeout", "no pong within WS_PING_TIMEOUT: the peer is gone")
            return
        self._report_traffic()
        if self._ping_payload is None:
            self._ping_payload = os.urandom(4)
            proto.send_ping(self._ping_payload)
            self._flush(proto)
            self._pong_by = now + settings.ping_timeout
        self._ping_at = now + settings.ping_interval

    def _idle_check(self) -> None:
        if self._lost:
            return
        idle = self.settings.idle_timeout
        left = self.last_message + idle - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle_check)
            return
        self.start_close(1001, "idle timeout")

    # --- the end ------------------------------------------------------------------------------

    def run(self, handler: Callable[..., Awaitable[Any]], *args: Any) -> asyncio.Task[None]:
        """Run the app's ``handler(*args)`` as this WebSocket's task and watch it.

        Before the ``101``: an exception fails the handshake (:meth:`fail_handshake`),
        returning without deciding is a 500 (logged). After it: returning closes with 1000
        if the app did not close; an exception other than :class:`WebSocketDisconnect`
        is logged with the request id and closes with 1011.
        """
        # run_handler itself, not a coroutine around it: one frame less for each WebSocket.
        task = self.loop.create_task(run_handler(self, handler, args))
        task.add_done_callback(self._handler_done)
        self.handler_task = task
        return task

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self.cut("cancelled", "the WebSocket's task was cancelled")
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        """Report the WebSocket once both the connection and the app's task are done."""
        if self._finished:
            return
        task = self.handler_task
        if task is not None and not task.done():
            return
        if self.transport is not None and not self._lost:
            return
        self._finished = True
        if self._handler_timer is not None:
            self._handler_timer.cancel()
        state = self._state
        if state is not None:
            self._report_traffic()
            state.websockets.discard(self)
            state.events.websocket_closed(self)
            state.check_idle()

    def _report_traffic(self) -> None:
        """Give the events what moved since the last report (for the live counters)."""
        state = self._state
        if state is None:
            return
        now = (self.messages_in, self.bytes_in, self.messages_out, self.bytes_out)
        last, self._reported = self._reported, now
        if now != last:
            state.events.websocket_traffic(
                now[0] - last[0], now[1] - last[1], now[2] - last[2], now[3] - last[3]
            )

    @property
    def duration(self) -> float:
        """Seconds since the ``101`` (0 before it)."""
        return self.loop.time() - self.opened_at if self.opened_at else 0.0

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent."""
        proto = self.proto
        return proto is not None and not self._lost and proto.state is OPEN


async def run_handler(
    channel: Any, handler: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> None:
    """Run a WebSocket's handler and settle what it leaves undecided or open.

    ``channel`` is a :class:`WebSocketConnection` or a hosted one (``decision``,
    ``fail_handshake``, ``close``, ``request``). Before the ``101``: an exception (a
    :class:`WebSocketDisconnect` included) fails the handshake, and so does returning
    without deciding (500, logged). After it: returning closes with 1000 if the app did
    not close; an exception other than :class:`WebSocketDisconnect` is logged with the
    request id and closes with 1011. Cancellation cancels an undecided handshake.

    Raises:
        asyncio.CancelledError: The task was cancelled.
    """
    # channel.decision is read anew each time: the connection replaces it after the 101
    try:
        await handler(*args)
    except WebSocketDisconnect as exc:
        if not channel.decision.done():
            channel.fail_handshake(
                RuntimeError(f"the WebSocket handler raised {exc!r} before accepting")
            )
    except asyncio.CancelledError:
        if not channel.decision.done():
            channel.decision.cancel()
        raise
    except Exception as exc:
        if not channel.decision.done():
            channel.fail_handshake(exc)
        else:
            request = channel.request
            logger.exception(
                "WebSocket handler failed",
                extra={"request_id": request.id, "path": request.path},
            )
            await channel.close(1011, "internal error")
    else:
        if not channel.decision.done():
            channel.fail_handshake(
                RuntimeError("the WebSocket handler returned without accepting or refusing")
            )
        else:
            await channel.close(1000)
