"""Streamed request content: handed to the handler piece by piece as it arrives.

In the server's streaming mode (``Server(..., stream_bodies=True)``, what the ASGI host
uses) a request with content is dispatched as soon as its header section is complete. Its
content then flows through a :class:`RequestChannel`: the connection feeds what the parser
de-frames, the handler reads it. The channel holds at most about ``HIGH_WATER_BYTES``
(plus one network read): past that the connection stops reading from the socket until the
handler catches up (TCP backpressure reaches the client), and the body deadline is
suspended meanwhile, since the client is not the one being slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nessen.http import Request, Response

HIGH_WATER_BYTES = 64 * 1024
"""Unread content bytes in a channel at which the connection pauses reading."""


class ClientDisconnected(Exception):
    """The request's content will not arrive: the client went away or the content was refused.

    Raised by :meth:`RequestChannel.read`. When the server refused the content (413, 408),
    it has already answered; the handler's own response is dropped.
    """


class RequestChannel:
    """The content of one request, and the fate of its connection, for the handler to read.

    The protocol side calls :meth:`feed`, :meth:`finish` and :meth:`close`; the handler
    side awaits :meth:`read` and :meth:`wait_closed`. Single reader; not thread-safe.

    Attributes:
        complete: Every content byte has been received (it may not all be read yet).
        closed: The request is over for the server: its response was written, its
            connection was lost, or its content was refused. Reading then raises
            :class:`ClientDisconnected` unless the content was already complete.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_continue",
        "_on_consumed",
        "_on_respond",
        "_on_wanted",
        "_waiters",
        "closed",
        "complete",
        "responded",
    )

    def __init__(
        self,
        *,
        complete: bool,
        on_consumed: Callable[[RequestChannel, int], None] | None = None,
        on_wanted: Callable[[RequestChannel], None] | None = None,
        expect_continue: bool = False,
        on_respond: Callable[[RequestChannel, Response], bool] | None = None,
    ) -> None:
        self.complete = complete
        self.closed = False
        self.responded = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._on_consumed = on_consumed
        self._on_wanted = on_wanted
        self._on_respond = on_respond
        self._continue = expect_continue

    @property
    def buffered(self) -> int:
        """Content bytes received and not read yet."""
        return self._buffered

    @property
    def expects_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and no ``100`` has been sent yet."""
        return self._continue

    def continue_sent(self) -> None:
        """Record that ``100 Continue`` went out (or is no longer needed)."""
        self._continue = False

    # --- protocol side ---------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append de-framed content bytes and wake the reader."""
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()

    def finish(self) -> None:
        """The content is complete: the reader gets the rest, then the end."""
        self.complete = True
        self._wake()

    def close(self) -> None:
        """The request is over (response written, connection lost, content refused)."""
        self.closed = True
        self._wake()

    def discard(self) -> int:
        """Drop unread content; return how many bytes were dropped."""
        dropped = self._buffered
        self._chunks.clear()
        self._buffered = 0
        return dropped

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter.cancelled() and waiter in self._waiters:
                self._waiters.remove(waiter)

    # --- handler side ----------------------------------------------------------------------

    def respond(self, response: Response) -> bool:
        """Answer the request now, before the handler returns (streaming mode only).

        The server writes ``response`` at once (a streamed one as its parts come) and goes
        on with the connection when it is written, while the handler may keep running
        (an ASGI app's background work). The handler's request deadline ends here; its
        return value is then ignored. Call it at most once.

        Returns:
            Whether the response was taken: False when the request was already answered
            (the server's 503 after the request deadline, 408/413 for its content) or the
            connection is gone, in which case it is dropped.
        """
        if self.responded or self._on_respond is None:
            return False
        self.responded = True  # while the server writes it: a re-entrant call is refused
        taken = self.responded = self._on_respond(self, response)
        return taken

    async def read(self) -> tuple[bytes, bool]:
        """Wait for content and return what has arrived since the last read.

        Returns:
            ``(data, more)``: every buffered byte (at most about ``HIGH_WATER_BYTES`` plus
            one network read), and whether more may follow. ``(b"", False)`` once the
            content has been read to its end.

        Raises:
            ClientDisconnected: The connection closed, or the server refused the content,
                before it was complete.
        """
        while True:
            ready = self.read_ready()
            if ready is not None:
                return ready
            if self._on_wanted is not None:
                self._on_wanted(self)
            await self._wait()

    def read_ready(self) -> tuple[bytes, bool] | None:
        """What :meth:`read` returns when it need not wait; ``None`` when it would wait.

        Raises:
            ClientDisconnected: As :meth:`read`.
        """
        if self._chunks:
            chunks = self._chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._chunks = []
            size = self._buffered
            self._buffered = 0
            if self._on_consumed is not None:
                self._on_consumed(self, size)
            return data, not self.complete
        if self.complete:
            return b"", False
        if self.closed:
            raise ClientDisconnected("the connection closed before the content was complete")
        return None

    async def wait_closed(self) -> None:
        """Wait until the request is over for the server (see :attr:`closed`)."""
        while not self.closed:
            await self._wait()


class StreamedRequest(Request):
    """A :class:`~nessen.http.Request` whose content is read from :attr:`channel`.

    Built by the server in streaming mode only; :attr:`body` stays ``b""``.

    Attributes:
        channel: The request's content and connection events.
    """

    __slots__ = ("channel",)

    channel: RequestChannel


class DeferredRequest(StreamedRequest):
    """A request whose client waits for ``100 Continue`` before sending its content.

    Built in the server's buffered mode (native handlers) for a request with content and
    ``Expect: 100-continue`` (RFC 9110 §10.1.1). The ``100`` goes out when its content is
    first read, with :meth:`read`, which the router does just before the route's handler
    runs: a request answered before that (404, 405, a middleware's 401 or 429) spares
    the client the upload, and the connection is then closed rather than reading it.
    Until it is read, :attr:`body` raises.
    """

    __slots__ = ("content_pending",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.content_pending = True  # until read() has read it

    @property
    def body(self) -> bytes:
        """The whole content, once :meth:`read` has read it.

        Raises:
            RuntimeError: It has not been read yet (in a middleware, before the router):
                ``await request.read()`` first.
        """
        if self.content_pending:
            raise RuntimeError(
                "the content of a request sent with Expect: 100-continue is read when its "
                "route's handler runs; before that (in a middleware) await request.read()"
            )
        return self._body

    async def read(self) -> bytes:
        """Send ``100 Continue``, read the whole content, and keep it as :attr:`body`.

        Raises:
            ClientDisconnected: The connection closed, or the server refused the content
                (413, 408: it has answered already), before it was complete.
        """
        if self.content_pending:
            chunks = []
            more = True
            while more:
                data, more = await self.channel.read()
                chunks.append(data)
            self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.content_pending = False
        return self._body
